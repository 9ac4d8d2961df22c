import Shared

/// Token charges Redis did not take (a timeout, no connection), kept to be sent again
/// later with backoff, off the request path. Bounded: when full the oldest charge is
/// dropped, and so is one that failed ``Configuration/maxAttempts`` times; ``dropped``
/// counts both (for a metric). A charge for a key that already waits is added to it, so
/// an outage costs one entry per key, not one per answer.
///
/// Pure: time (monotonic microseconds) is passed in; the caller sends what ``takeDue(now:)``
/// returns and reports each with ``retryFailed(_:now:)`` or nothing (it succeeded).
public struct TokenChargeRetryQueue: Sendable {
    /// One charge: `cost` tokens to `keyID`'s token bucket under `gcra`.
    public struct Charge: Sendable, Equatable {
        public var keyID: UInt64
        public var gcra: GCRA
        public var cost: UInt64

        public init(keyID: UInt64, gcra: GCRA, cost: UInt64) {
            self.keyID = keyID
            self.gcra = gcra
            self.cost = cost
        }
    }

    /// A charge taken out to be sent, with the attempts it has failed so far.
    public struct Pending: Sendable, Equatable {
        public var charge: Charge
        /// Failed attempts so far (1 after the first).
        public var attempts: Int
        /// When it first failed: its age decides which is dropped when full.
        var firstFailed: UInt64
    }

    /// Size and backoff.
    public struct Configuration: Sendable, Equatable {
        /// Charges kept at most (1024 by default).
        public var capacity = 1024
        /// Failed attempts after which a charge is dropped (8 by default).
        public var maxAttempts = 8
        /// The wait after the first failure (100 ms by default), doubled after each one more.
        public var initialBackoffMicros: UInt64 = 100_000
        /// The longest wait (5 s by default).
        public var maximumBackoffMicros: UInt64 = 5_000_000

        public init() {}
    }

    private struct Entry: Sendable {
        var pending: Pending
        var due: UInt64
    }

    public let configuration: Configuration
    /// In the order they first came.
    private var entries: [Entry] = []
    /// Charges dropped, ever: the queue was full, or they failed too often.
    public private(set) var dropped: UInt64 = 0

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Charges waiting.
    public var count: Int { entries.count }

    /// The earliest time a charge is due (for the caller's timer); nil when none waits.
    public var nextDue: UInt64? { entries.map(\.due).min() }

    /// `charge` failed at `now` for the first time: keep it for a retry.
    public mutating func failed(_ charge: Charge, now: UInt64) {
        enqueue(Pending(charge: charge, attempts: 1, firstFailed: now), now: now)
    }

    /// A retry taken out by ``takeDue(now:)`` failed again at `now`: keep it for another,
    /// unless it has failed ``Configuration/maxAttempts`` times (then it is dropped).
    public mutating func retryFailed(_ pending: Pending, now: UInt64) {
        var pending = pending
        pending.attempts += 1
        guard pending.attempts < configuration.maxAttempts else {
            dropped += 1
            return
        }
        enqueue(pending, now: now)
    }

    /// Takes out every charge due at `now`, oldest first, to be sent.
    public mutating func takeDue(now: UInt64) -> [Pending] {
        var due: [Pending] = []
        entries.removeAll { entry in
            guard entry.due <= now else { return false }
            due.append(entry.pending)
            return true
        }
        return due
    }

    /// The wait before the next attempt of a charge that failed `attempts` times.
    func backoff(attempts: Int) -> UInt64 {
        let doublings = UInt64(min(max(0, attempts - 1), 32))
        let (wait, overflow) = configuration.initialBackoffMicros.multipliedReportingOverflow(by: 1 << doublings)
        return overflow ? configuration.maximumBackoffMicros : min(wait, configuration.maximumBackoffMicros)
    }

    private mutating func enqueue(_ pending: Pending, now: UInt64) {
        let due = now &+ backoff(attempts: pending.attempts)
        if let index = entries.firstIndex(where: { $0.pending.charge.keyID == pending.charge.keyID && $0.pending.charge.gcra == pending.charge.gcra }) {
            let (sum, overflow) = entries[index].pending.charge.cost.addingReportingOverflow(pending.charge.cost)
            entries[index].pending.charge.cost = overflow ? .max : sum
            entries[index].pending.attempts = max(entries[index].pending.attempts, pending.attempts)
            entries[index].pending.firstFailed = min(entries[index].pending.firstFailed, pending.firstFailed)
            return
        }
        if entries.count >= max(1, configuration.capacity),
            let oldest = entries.indices.min(by: { entries[$0].pending.firstFailed < entries[$1].pending.firstFailed })
        {
            entries.remove(at: oldest)
            dropped += 1
        }
        entries.append(Entry(pending: pending, due: due))
    }
}
