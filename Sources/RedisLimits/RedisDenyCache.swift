import Shared

/// Refusals Redis gave, remembered per worker until their retry time, so a key that keeps
/// sending while limited is refused here without a Redis call: a flood from one key does
/// not become a flood on Redis. A refusal never becomes wrong before its retry time — the
/// other hosts can only take more from the bucket, never give back — so the cache is never
/// stale in the client's favour.
///
/// Pure: time (monotonic microseconds, this host's clock) is passed in. Bounded: when
/// full, expired entries go first, then the one expiring soonest.
public struct RedisDenyCache: Sendable {
    /// A remembered refusal, as it stands at the time asked.
    public struct Denial: Sendable, Equatable {
        /// Which limit refused (``MetricsLayout/Limit/requests`` or ``MetricsLayout/Limit/tokens``).
        public var limit: MetricsLayout.Limit
        /// The refusal with its times counted from the time asked.
        public var outcome: RateLimitTable.Outcome
    }

    private struct Entry: Sendable {
        var limit: MetricsLayout.Limit
        var until: UInt64
        var resetAt: UInt64
    }

    /// Keys remembered at most.
    public let capacity: Int
    private var entries: [UInt64: Entry] = [:]

    /// A cache of up to `capacity` keys (4096 by default: the shared segment's table size).
    public init(capacity: Int = RateLimitTable.capacity) {
        self.capacity = max(1, capacity)
    }

    /// Keys remembered now (expired ones included until they are looked up or evicted).
    public var count: Int { entries.count }

    /// Remembers Redis's `outcome` for `keyID` (from `limit`'s bucket) at `now`; only a
    /// refusal is kept.
    public mutating func record(keyID: UInt64, limit: MetricsLayout.Limit, outcome: RateLimitTable.Outcome, now: UInt64) {
        guard case .limited(let retry, let reset) = outcome, retry > 0 else { return }
        let entry = Entry(limit: limit, until: Self.add(now, retry), resetAt: Self.add(now, reset))
        if let existing = entries[keyID], existing.until >= entry.until { return }
        if entries[keyID] == nil, entries.count >= capacity { makeRoom(now: now) }
        entries[keyID] = entry
    }

    /// The refusal remembered for `keyID` if its retry time is still ahead at `now`.
    public mutating func denial(keyID: UInt64, now: UInt64) -> Denial? {
        guard let entry = entries[keyID] else { return nil }
        guard now < entry.until else {
            entries[keyID] = nil
            return nil
        }
        let reset = entry.resetAt > now ? entry.resetAt - now : 0
        return Denial(limit: entry.limit, outcome: .limited(retryAfterMicros: entry.until - now, resetMicros: reset))
    }

    private mutating func makeRoom(now: UInt64) {
        entries = entries.filter { $0.value.until > now }
        guard entries.count >= capacity, let soonest = entries.min(by: { $0.value.until < $1.value.until }) else { return }
        entries[soonest.key] = nil
    }

    private static func add(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? .max : sum
    }
}
