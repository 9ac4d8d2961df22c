import NIOCore
import NIOSSL

/// How a ``RedisConnection`` or ``RedisClient`` talks to Redis, with defaults for limits
/// checked on every request (a deadline far below a request's own latency budget).
public struct RedisConfiguration: Sendable {
    /// How long a command may wait for its reply (25 ms by default): after it the command
    /// fails with ``RedisError/timeout``.
    public var commandTimeout: TimeAmount = .milliseconds(25)
    /// How long connecting may take: TCP, TLS, then `AUTH` and `SELECT` (1 s by default).
    public var connectTimeout: TimeAmount = .seconds(1)
    /// What one reply may declare or take.
    public var decoderLimits = RESPDecoder.Limits()
    /// The waits between reconnect attempts.
    public var backoff = Backoff()
    /// For `rediss://` (the system's trust roots by default).
    public var tls: TLSConfiguration = .makeClientConfiguration()

    /// The defaults above.
    public init() {}

    /// Exponential backoff with a cap and jitter: attempt *n* (from 0) waits
    /// `min(maximum, initial × multiplier^n)`, less up to `jitter` of it at random, so
    /// hosts that lost Redis together do not come back in step.
    public struct Backoff: Sendable, Hashable {
        /// The first wait, also the wait after a connection that was up drops (50 ms by default).
        public var initial: TimeAmount = .milliseconds(50)
        /// The longest wait (5 s by default).
        public var maximum: TimeAmount = .seconds(5)
        /// Growth per failed attempt (2 by default).
        public var multiplier: Double = 2
        /// The fraction of a wait taken off at random, 0...1 (0.5 by default).
        public var jitter: Double = 0.5

        /// The defaults above.
        public init() {}
    }
}
