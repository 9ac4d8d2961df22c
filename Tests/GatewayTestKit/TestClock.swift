import Shared

/// A clock tests move by hand, for the state machines (which take time as an argument).
public struct TestClock: Sendable {
    public private(set) var now: MonotonicInstant

    public init(start: UInt64 = 1_000_000_000_000) { now = MonotonicInstant(nanoseconds: start) }

    /// Moves the clock forward by `seconds`.
    public mutating func advance(_ seconds: Double) { now = now.adding(seconds: seconds) }
}
