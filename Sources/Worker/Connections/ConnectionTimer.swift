import NIOCore

/// Closes a connection that holds a worker without making progress (slowloris and
/// friends): a request head must arrive within `head` of the connection opening, a body
/// within `body` of its head, and an idle keep-alive connection is closed after `idle`.
/// ``GatewayConnection`` says when each phase starts; the timer runs on the connection's
/// event loop and nothing is shared.
///
/// One scheduled task per connection, not per request: a new deadline later than the
/// armed task only moves ``deadline``; the task, when it fires early, re-arms for what is
/// left.
final class ConnectionTimer {
    struct Timeouts: Sendable {
        var head: TimeAmount
        var body: TimeAmount
        var idle: TimeAmount
    }

    let timeouts: Timeouts
    private var task: Scheduled<Void>?
    /// When the armed task fires.
    private var taskFires: NIODeadline?
    /// When the connection is closed unless it makes progress (nil: no limit now).
    private var deadline: NIODeadline?

    init(timeouts: Timeouts) { self.timeouts = timeouts }

    /// The connection must make progress within `amount` from now.
    func arm(_ amount: TimeAmount, channel: any Channel) {
        let deadline = channel.eventLoop.now + amount
        self.deadline = deadline
        if let taskFires, taskFires <= deadline { return }  // fires first, then re-arms
        schedule(at: deadline, channel: channel)
    }

    /// No limit until the next ``arm(_:channel:)`` (a response may take as long as the
    /// upstream needs).
    func disarm() { deadline = nil }

    /// The connection closed.
    func cancel() {
        deadline = nil
        task?.cancel()
        task = nil
        taskFires = nil
    }

    private func schedule(at when: NIODeadline, channel: any Channel) {
        task?.cancel()
        taskFires = when
        task = channel.eventLoop.assumeIsolated().scheduleTask(deadline: when) { [self] in
            task = nil
            taskFires = nil
            guard let deadline else { return }
            if deadline <= channel.eventLoop.now {
                channel.close(promise: nil)
            } else {
                schedule(at: deadline, channel: channel)
            }
        }
    }
}
