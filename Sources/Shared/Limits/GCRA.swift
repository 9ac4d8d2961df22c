/// The generic cell rate algorithm on one 64-bit "theoretical arrival time" (TAT): a
/// token bucket of `burst` cells refilled at `burst` per `period`, as pure arithmetic so
/// the shared table can apply it with one compare-and-swap.
public struct GCRA: Sendable, Equatable {
    /// Microseconds between two cells (period / rate).
    public let emissionInterval: UInt64
    /// How far the TAT may run ahead of now: (burst - 1) × interval.
    public let tolerance: UInt64

    /// - Parameters:
    ///   - rate: cells per `periodMicros` (and the burst a fresh bucket allows).
    public init(rate: Int, periodMicros: UInt64 = 60_000_000) {
        let interval = max(1, periodMicros / UInt64(max(1, rate)))
        emissionInterval = interval
        tolerance = Self.multiply(interval, UInt64(max(0, rate - 1)))
    }

    /// `a + b`, or `UInt64.max` when that overflows.
    static func add(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? .max : sum
    }

    /// `a × b`, or `UInt64.max` when that overflows.
    static func multiply(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (product, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? .max : product
    }

    /// The outcome of taking `cost` cells at `now` from a bucket whose TAT is `tat`.
    public enum Decision: Sendable, Equatable {
        /// Allowed; store `newTAT`.
        case allow(newTAT: UInt64)
        /// Refused; a retry can succeed after `retryAfterMicros`.
        case deny(retryAfterMicros: UInt64)
    }

    /// Takes `cost` cells (1 for a request) if the bucket holds them.
    ///
    /// Every sum and product saturates at `UInt64.max` instead of trapping: the inputs come
    /// from outside (a cost an upstream reported, a rate from the configuration).
    public func take(tat: UInt64, now: UInt64, cost: UInt64 = 1) -> Decision {
        let start = max(tat, now)
        let newTAT = Self.add(start, Self.multiply(emissionInterval, cost))
        let limit = Self.add(Self.add(now, tolerance), emissionInterval)
        if newTAT > limit { return .deny(retryAfterMicros: newTAT - limit) }
        return .allow(newTAT: newTAT)
    }

    /// nil when the bucket holds at least one cell (used before a request whose cost is
    /// known only afterwards); otherwise the microseconds until it does.
    public func check(tat: UInt64, now: UInt64) -> UInt64? {
        let ahead = tat > now ? tat - now : 0
        return ahead > tolerance ? ahead - tolerance : nil
    }

    /// Charges `cost` cells unconditionally (the bucket may go into debt).
    public func charge(tat: UInt64, now: UInt64, cost: UInt64) -> UInt64 { Self.add(max(tat, now), Self.multiply(emissionInterval, cost)) }

    /// Whole cells left after the bucket's TAT reached `tat`.
    public func remaining(tat: UInt64, now: UInt64) -> Int {
        let ahead = tat > now ? tat - now : 0
        let room = Self.add(tolerance, emissionInterval)
        return ahead >= room ? 0 : Int((room - ahead) / emissionInterval)
    }

    /// Microseconds until the bucket is full again.
    public func resetMicros(tat: UInt64, now: UInt64) -> UInt64 { tat > now ? tat - now : 0 }
}
