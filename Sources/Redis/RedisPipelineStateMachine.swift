import NIOCore

/// The commands of one connection that are written and unanswered, as a value: replies
/// are matched to them in order (Redis answers in the order it reads), each has a deadline
/// after which its waiter is failed, and its reply, when it comes, is still taken in turn and
/// dropped. Generic over the waiter (a promise in ``RedisCommandHandler``, a number in the
/// tests); time is passed in.
struct RedisPipelineStateMachine<Waiter> {
    private struct Pending {
        /// nil once the deadline passed: the reply is dropped.
        var waiter: Waiter?
        let deadline: NIODeadline
    }

    /// Oldest first.
    private var pending = CircularBuffer<Pending>(initialCapacity: 16)
    private(set) var isClosed = false

    init() {}

    /// Commands written and not yet answered (timed-out ones included).
    var count: Int { pending.count }

    /// The earliest deadline of a command that still has a waiter.
    var nextDeadline: NIODeadline? {
        pending.lazy.filter { $0.waiter != nil }.map(\.deadline).min()
    }

    /// A command is to be written. False when the connection closed: fail it instead.
    mutating func send(_ waiter: Waiter, deadline: NIODeadline) -> Bool {
        guard !isClosed else { return false }
        pending.append(Pending(waiter: waiter, deadline: deadline))
        return true
    }

    enum ReplyAction {
        /// The reply answers this waiter.
        case deliver(Waiter)
        /// The reply answers a command whose deadline passed: drop it.
        case drop
        /// No command was waiting: the server is out of step; close the connection.
        case unsolicited
    }

    /// A reply arrived.
    mutating func replyReceived() -> ReplyAction {
        guard let oldest = pending.popFirst() else { return .unsolicited }
        return oldest.waiter.map(ReplyAction.deliver) ?? .drop
    }

    /// The waiters whose deadline is at or before `now`, to fail with a timeout; their
    /// replies will be dropped.
    mutating func deadlinesPassed(now: NIODeadline) -> [Waiter] {
        var expired: [Waiter] = []
        for index in pending.indices {
            if let waiter = pending[index].waiter, pending[index].deadline <= now {
                expired.append(waiter)
                pending[index].waiter = nil
            }
        }
        return expired
    }

    /// The connection closed: every waiter left, to fail. Later sends are refused.
    mutating func closed() -> [Waiter] {
        isClosed = true
        defer { pending.removeAll() }
        return pending.compactMap(\.waiter)
    }
}
