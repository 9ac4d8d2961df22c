import Redis
import Shared

/// The answer of one bucket in a ``RedisLimitScripts`` reply, as four integers:
/// `allowed` (1 or 0), `retry-after` (microseconds until a retry can succeed; 0 when
/// allowed), `remaining` (whole cells left; 0 when refused), `reset` (microseconds until
/// the bucket is full again) — decoded into the ``RateLimitTable/Outcome`` the local
/// tables give.
public enum RedisLimitReply {
    /// Integers per bucket in a reply.
    static let width = 4

    /// The outcome of the bucket at `index` (0 or 1) of `reply`.
    /// - Throws: ``RedisError/protocolViolation(_:)`` for a reply of another shape.
    public static func outcome(_ reply: RESPValue, bucket index: Int = 0) throws(RedisError) -> RateLimitTable.Outcome {
        guard let values = reply.array, values.count >= (index + 1) * width else { throw malformed }
        var numbers: [UInt64] = []
        numbers.reserveCapacity(width)
        for value in values[(index * width)..<((index + 1) * width)] {
            guard case .integer(let number) = value, number >= 0 else { throw malformed }
            numbers.append(UInt64(number))
        }
        switch numbers[0] {
        case 1: return .allowed(remaining: Int(clamping: numbers[2]), resetMicros: numbers[3])
        case 0: return .limited(retryAfterMicros: numbers[1], resetMicros: numbers[3])
        default: throw malformed
        }
    }

    /// The request bucket's outcome and, when the reply has it, the token bucket's
    /// (``RedisLimitScripts/admit``).
    public static func admission(_ reply: RESPValue) throws(RedisError) -> RedisAdmission {
        guard let count = reply.array?.count, count == width || count == 2 * width else { throw malformed }
        return RedisAdmission(requests: try outcome(reply, bucket: 0), tokens: count == width ? nil : try outcome(reply, bucket: 1))
    }

    static var malformed: RedisError { .protocolViolation("unexpected reply from a limits script") }
}

/// What Redis answered for a request's admission.
public struct RedisAdmission: Sendable, Equatable {
    /// The request bucket's take.
    public var requests: RateLimitTable.Outcome
    /// The token bucket's check; nil when not checked (no token limit, or the request was refused).
    public var tokens: RateLimitTable.Outcome?

    public init(requests: RateLimitTable.Outcome, tokens: RateLimitTable.Outcome?) {
        self.requests = requests
        self.tokens = tokens
    }
}
