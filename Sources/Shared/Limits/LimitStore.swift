/// Where per-key buckets live: the seam the request limiter takes its buckets through.
///
/// Today's one store is the shared segment's ``RateLimitTable`` (exact across the workers of
/// one host). A store shared by several gateway hosts (Redis) sits in front of it behind
/// the same three calls. Every call is for one key's bucket under one ``GCRA``, with the
/// caller's clock reading in microseconds.
public protocol LimitStore: Sendable {
    /// Takes `cost` cells if the bucket holds them (a request's admission).
    func take(key: UInt64, gcra: GCRA, now: UInt64, cost: UInt64) -> RateLimitTable.Outcome
    /// Admits while the bucket is not in debt, taking nothing (a token bucket before the
    /// answer says what it cost).
    func check(key: UInt64, gcra: GCRA, now: UInt64) -> RateLimitTable.Outcome
    /// Charges `cost` cells after the fact; the bucket may go into debt.
    @discardableResult
    func charge(key: UInt64, gcra: GCRA, now: UInt64, cost: UInt64) -> RateLimitTable.Outcome
}

extension RateLimitTable: LimitStore {}
