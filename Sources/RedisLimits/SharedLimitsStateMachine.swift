import Redis
import Shared

/// One worker's per-key limits when the hosts share them through Redis, as a value: which
/// store decides a request (the remembered refusals first, then Redis while its breaker is
/// closed, else the failure mode), where an answer's tokens are charged, and the charges
/// waiting to be sent again. Pure: it reads no clock (monotonic microseconds are passed
/// in) and sends nothing; the worker performs what it answers and reports the outcomes.
///
/// It joins the three pieces each tested on its own: ``RedisLimitModeStateMachine`` (the
/// breaker on Redis), ``RedisDenyCache`` and ``TokenChargeRetryQueue``.
public struct SharedLimitsStateMachine: Sendable {
    /// What to do for one request's admission.
    public enum Admission: Sendable, Equatable {
        /// A refusal Redis gave for this key still stands: refuse it without asking.
        case refuseRemembered(RedisDenyCache.Denial)
        /// Ask Redis (one `EVALSHA` of ``RedisLimitScripts/admit``), then report the answer
        /// with ``redisAnswered(keyID:_:now:)`` or the failure with ``redisFailed(_:now:)``.
        case askRedis
        /// Decide in the host's shared segment with every limit divided by `divisor`.
        case local(divisor: Int)
        /// Admit without a per-key limit.
        case admit
        /// Refuse with 503 and this `Retry-After`.
        case unavailable(retryAfterSeconds: Int)
    }

    /// Where the tokens of an answer are charged.
    public enum ChargeRoute: Sendable, Equatable {
        /// To Redis, off the request path; a failure goes to ``chargeFailed(_:error:now:)``.
        case redis
        /// To the host's segment with the limit divided by `divisor`.
        case local(divisor: Int)
        /// Nowhere: no per-key limit applies (`open`, `closed`).
        case none
    }

    private var mode: RedisLimitModeStateMachine
    private var denials: RedisDenyCache
    private var retries: TokenChargeRetryQueue

    public init(
        configuration: RedisLimitModeStateMachine.Configuration, denyCapacity: Int = RateLimitTable.capacity,
        retries: TokenChargeRetryQueue.Configuration = TokenChargeRetryQueue.Configuration()
    ) {
        self.mode = RedisLimitModeStateMachine(configuration: configuration)
        self.denials = RedisDenyCache(capacity: denyCapacity)
        self.retries = TokenChargeRetryQueue(configuration: retries)
    }

    /// True while limits are in Redis (`llm_gateway_limits_store_up`).
    public var isStoreUp: Bool { mode.isStoreUp }

    /// Charges dropped, ever (the retry queue was full, or a charge failed too often).
    public var droppedCharges: UInt64 { retries.dropped }

    /// Charges waiting to be sent again.
    public var pendingCharges: Int { retries.count }

    /// When the next charge is due to be sent again; nil when none waits.
    public var nextRetryDue: UInt64? { retries.nextDue }

    /// How the request of `keyID` arriving at `now` is admitted.
    public mutating func admission(keyID: UInt64, now: UInt64) -> Admission {
        if let denial = denials.denial(keyID: keyID, now: now) { return .refuseRemembered(denial) }
        return Self.admission(for: mode.route(now: now))
    }

    /// Redis answered the admission of `keyID`: a refusal is remembered until its retry time.
    public mutating func redisAnswered(keyID: UInt64, _ answer: RedisAdmission, now: UInt64) -> RedisLimitModeStateMachine.ModeChange? {
        if case .limited = answer.requests {
            denials.record(keyID: keyID, limit: .requests, outcome: answer.requests, now: now)
        } else if let tokens = answer.tokens, case .limited = tokens {
            denials.record(keyID: keyID, limit: .tokens, outcome: tokens, now: now)
        }
        return mode.commandSucceeded(now: now)
    }

    /// The admission command failed: the breaker counts it, and the request is decided as
    /// the failure mode says (`instead`) — a request never waits for Redis twice.
    public mutating func redisFailed(_ error: RedisError, now: UInt64) -> (change: RedisLimitModeStateMachine.ModeChange?, instead: Admission) {
        let change = mode.commandFailed(error, now: now)
        return (change, Self.admission(for: mode.failureRoute(now: now)))
    }

    /// While Redis cannot be used and no request has probed it since the cooldown: true
    /// when a background probe (a `PING`) should go now, so the limits come back — and
    /// `llm_gateway_limits_store_up` says so — even with no request arriving. Report it with
    /// ``probeSucceeded(now:)`` or ``probeFailed(_:now:)``.
    public mutating func backgroundProbeDue(now: UInt64) -> Bool {
        guard !mode.isStoreUp, case .redis(probe: true) = mode.route(now: now) else { return false }
        return true
    }

    /// The microseconds between two probes while Redis cannot be used.
    public var probeInterval: UInt64 { mode.configuration.cooldownMicros }

    /// A background probe was answered.
    public mutating func probeSucceeded(now: UInt64) -> RedisLimitModeStateMachine.ModeChange? { mode.commandSucceeded(now: now) }

    /// A background probe failed (or there was no connection to send it on).
    public mutating func probeFailed(_ error: RedisError, now: UInt64) -> RedisLimitModeStateMachine.ModeChange? {
        mode.commandFailed(error, now: now)
    }

    /// Where the tokens of an answer ending at `now` go: Redis while its breaker is closed
    /// (no probe: a charge never tests whether Redis is back), else as the failure mode says.
    public func chargeRoute() -> ChargeRoute {
        guard !mode.isStoreUp else { return .redis }
        switch mode.configuration.failureMode {
        case .local: return .local(divisor: mode.configuration.gatewayHosts)
        case .open, .closed: return .none
        }
    }

    /// A charge (first sent, or sent again) succeeded.
    public mutating func chargeSucceeded(now: UInt64) -> RedisLimitModeStateMachine.ModeChange? {
        mode.commandSucceeded(now: now)
    }

    /// A charge sent for the first time failed: it waits to be sent again.
    public mutating func chargeFailed(_ charge: TokenChargeRetryQueue.Charge, error: RedisError, now: UInt64) -> RedisLimitModeStateMachine.ModeChange? {
        retries.failed(charge, now: now)
        return mode.commandFailed(error, now: now)
    }

    /// A charge sent again failed again: it waits once more, or is dropped.
    public mutating func retryFailed(_ pending: TokenChargeRetryQueue.Pending, error: RedisError, now: UInt64) -> RedisLimitModeStateMachine.ModeChange? {
        retries.retryFailed(pending, now: now)
        return mode.commandFailed(error, now: now)
    }

    /// The charges due at `now`, taken out to be sent; each is reported with
    /// ``chargeSucceeded(now:)`` or ``retryFailed(_:error:now:)``. None while the breaker
    /// is open: they would only fail; they wait (and age) until Redis answers again.
    public mutating func dueRetries(now: UInt64) -> [TokenChargeRetryQueue.Pending] {
        guard mode.isStoreUp else { return [] }
        return retries.takeDue(now: now)
    }

    private static func admission(for route: RedisLimitModeStateMachine.Route) -> Admission {
        switch route {
        case .redis: .askRedis
        case .local(let divisor): .local(divisor: divisor)
        case .admit: .admit
        case .refuse(let seconds): .unavailable(retryAfterSeconds: seconds)
        }
    }
}
