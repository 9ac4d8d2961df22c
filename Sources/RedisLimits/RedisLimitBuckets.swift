import NIOCore
import Redis
import Shared

/// Per-key buckets in Redis: the ``RedisLimitScripts`` sent with `EVALSHA` on a
/// ``RedisClient`` (or one ``RedisConnection``), their replies decoded. Futures on the
/// client's event loop; a failure is a ``RedisError`` (its ``RedisError/kind`` is the
/// `llm_gateway_limits_store_errors_total` label).
public struct RedisLimitBuckets: Sendable {
    private let evalSHA: @Sendable (RedisScript, [String], [String]) -> EventLoopFuture<RESPValue>

    /// Buckets through `client`, on its event loop.
    public init(client: RedisClient) {
        evalSHA = { client.evalSHA(script: $0, keys: $1, args: $2) }
    }

    /// Buckets through one connection.
    public init(connection: RedisConnection) {
        evalSHA = { connection.evalSHA(script: $0, keys: $1, args: $2) }
    }

    /// Takes one request from `keyID`'s request bucket and, with a token limit, checks its
    /// token bucket is not in debt: one round trip.
    public func admit(keyID: UInt64, requests: GCRA, tokens: GCRA?) -> EventLoopFuture<RedisAdmission> {
        let args = Self.args(requests) + (tokens.map(Self.args) ?? ["0", "0"])
        return evalSHA(RedisLimitScripts.admit, [RedisLimitKeys.requests(keyID), RedisLimitKeys.tokens(keyID)], args)
            .flatMapThrowing { reply in try RedisLimitReply.admission(reply) }
    }

    /// Takes `cost` cells from `keyID`'s request bucket.
    public func take(keyID: UInt64, gcra: GCRA, cost: UInt64 = 1) -> EventLoopFuture<RateLimitTable.Outcome> {
        run(RedisLimitScripts.take, key: RedisLimitKeys.requests(keyID), args: Self.args(gcra) + [String(min(cost, Self.maxExact))])
    }

    /// Whether `keyID`'s token bucket is out of debt, taking nothing.
    public func check(keyID: UInt64, gcra: GCRA) -> EventLoopFuture<RateLimitTable.Outcome> {
        run(RedisLimitScripts.check, key: RedisLimitKeys.tokens(keyID), args: Self.args(gcra))
    }

    /// Charges `cost` tokens to `keyID`'s token bucket (into debt if need be).
    public func charge(keyID: UInt64, gcra: GCRA, cost: UInt64) -> EventLoopFuture<RateLimitTable.Outcome> {
        run(RedisLimitScripts.charge, key: RedisLimitKeys.tokens(keyID), args: Self.args(gcra) + [String(min(cost, Self.maxExact))])
    }

    private func run(_ script: RedisScript, key: String, args: [String]) -> EventLoopFuture<RateLimitTable.Outcome> {
        evalSHA(script, [key], args).flatMapThrowing { reply in try RedisLimitReply.outcome(reply) }
    }

    /// A bucket's parameters as the scripts take them. Above 2⁵³ a Lua double is not exact:
    /// such an interval (a rate of one cell per 285 years) is capped there.
    static func args(_ gcra: GCRA) -> [String] {
        [String(min(gcra.emissionInterval, maxExact)), String(min(gcra.tolerance, maxExact))]
    }

    static let maxExact: UInt64 = (1 << 53) - 1
}
