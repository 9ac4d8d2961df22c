import Redis
import Shared

/// Which store a request's per-key limits use, from Redis's health as the outcomes of the
/// limits commands show it: Redis while it answers; else the configured failure mode
/// (`REDIS_FAILURE_MODE`). Pure: time (monotonic microseconds) is passed in, nothing is
/// sent; one per worker (the breaker is per host, as README says).
///
/// A breaker on Redis: `up` counts consecutive failures and opens (`down`) at
/// ``Configuration/failureThreshold`` — or at once when the client has no connection
/// (``RedisError/notConnected``: nothing to wait for). After ``Configuration/cooldownMicros``
/// one request probes Redis (`probing`) while the others keep to the failure mode; the
/// probe's success closes the breaker, its failure opens it for another cooldown. A
/// probe whose outcome never comes (it cannot: every command has a deadline) is replaced
/// after a cooldown. Successes reported while `down` come from commands sent before it
/// opened and change nothing.
///
/// Every change between ``Mode/shared`` and ``Mode/degraded(_:)`` is returned exactly once,
/// as a ``ModeChange`` for the one log line.
public struct RedisLimitModeStateMachine: Sendable {
    /// The failure mode and the breaker's settings.
    public struct Configuration: Sendable, Equatable {
        /// `REDIS_FAILURE_MODE`.
        public var failureMode: GatewayConfiguration.RedisFailureMode
        /// `GATEWAY_HOSTS`: in `local` mode each host enforces limit ÷ this.
        public var gatewayHosts: Int
        /// Consecutive failed commands that open the breaker (3 by default).
        public var failureThreshold = 3
        /// Microseconds the breaker stays open before a probe (1 s by default).
        public var cooldownMicros: UInt64 = 1_000_000

        public init(failureMode: GatewayConfiguration.RedisFailureMode, gatewayHosts: Int) {
            self.failureMode = failureMode
            self.gatewayHosts = max(1, gatewayHosts)
        }

        /// The failure mode and host count of `limits` (the configuration's).
        public init(_ limits: GatewayConfiguration.SharedLimits) {
            self.init(failureMode: limits.failureMode, gatewayHosts: limits.gatewayHosts)
        }
    }

    /// Where one request's limits are decided.
    public enum Route: Sendable, Equatable {
        /// Redis (``RedisLimitBuckets``); `probe` when this request tests whether Redis is back.
        case redis(probe: Bool)
        /// The host's shared segment, each limit divided by `divisor` (`GATEWAY_HOSTS`).
        case local(divisor: Int)
        /// No per-key limit: admit (`open`).
        case admit
        /// Refuse with 503 and this `Retry-After` (`closed`).
        case refuse(retryAfterSeconds: Int)
    }

    /// Where limits are kept, as the log line and `llm_gateway_limits_store_up` tell it.
    public enum Mode: Sendable, Equatable {
        /// In Redis, shared by the hosts.
        case shared
        /// Redis cannot be used: the failure mode applies.
        case degraded(GatewayConfiguration.RedisFailureMode)
    }

    /// A change of ``Mode``, returned once by the event that caused it.
    public struct ModeChange: Sendable, Equatable {
        public var from: Mode
        public var to: Mode
        /// The ``RedisError/kind`` of the failure that opened the breaker; nil when closing.
        public var cause: String?
        /// `GATEWAY_HOSTS`, for the message.
        var gatewayHosts: Int

        /// The log line: what happened and which limits now apply. No key, no URL.
        public var message: String {
            switch to {
            case .shared:
                return "limits: Redis answers again; per-key limits are shared across hosts"
            case .degraded(let mode):
                let why = "limits: Redis cannot be used (\(cause ?? "error")); "
                switch mode {
                case .local: return why + "enforcing this host's limits at limit ÷ \(gatewayHosts) (GATEWAY_HOSTS) until it answers"
                case .open: return why + "admitting requests without per-key limits until it answers (REDIS_FAILURE_MODE=open)"
                case .closed: return why + "refusing requests with 503 until it answers (REDIS_FAILURE_MODE=closed)"
                }
            }
        }
    }

    private enum State: Sendable, Equatable {
        case up(consecutiveFailures: Int)
        case down(since: UInt64)
        case probing(since: UInt64)
    }

    public let configuration: Configuration
    private var state = State.up(consecutiveFailures: 0)

    /// Starts trusting Redis: the first commands tell whether it answers.
    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// The current mode.
    public var mode: Mode {
        if case .up = state { return .shared }
        return .degraded(configuration.failureMode)
    }

    /// True while limits are in Redis (`llm_gateway_limits_store_up`).
    public var isStoreUp: Bool { mode == .shared }

    /// Where the limits of a request arriving at `now` are decided. After a cooldown the
    /// first call returns `.redis(probe: true)`: report its outcome like any other.
    public mutating func route(now: UInt64) -> Route {
        switch state {
        case .up:
            return .redis(probe: false)
        case .down(let since), .probing(let since):
            let elapsed = now > since ? now - since : 0
            guard elapsed >= configuration.cooldownMicros else { return failureRoute(now: now) }
            state = .probing(since: now)
            return .redis(probe: true)
        }
    }

    /// A limits command succeeded: Redis answers.
    public mutating func commandSucceeded(now: UInt64) -> ModeChange? {
        switch state {
        case .up:
            state = .up(consecutiveFailures: 0)
            return nil
        case .down:
            return nil  // sent before the breaker opened
        case .probing:
            state = .up(consecutiveFailures: 0)
            return ModeChange(from: .degraded(configuration.failureMode), to: .shared, cause: nil, gatewayHosts: configuration.gatewayHosts)
        }
    }

    /// A limits command failed with `error`.
    public mutating func commandFailed(_ error: RedisError, now: UInt64) -> ModeChange? {
        switch state {
        case .up(let failures):
            let count = failures + 1
            guard count >= configuration.failureThreshold || error == .notConnected else {
                state = .up(consecutiveFailures: count)
                return nil
            }
            state = .down(since: now)
            return ModeChange(from: .shared, to: .degraded(configuration.failureMode), cause: error.kind, gatewayHosts: configuration.gatewayHosts)
        case .down:
            return nil  // sent before the breaker opened
        case .probing:
            state = .down(since: now)
            return nil
        }
    }

    /// Where a request arriving at `now` goes when Redis is not asked — the breaker is open,
    /// or the command for it just failed: the failure mode's route. `closed`'s
    /// `Retry-After` is the rest of the cooldown (at least 1 s).
    public func failureRoute(now: UInt64) -> Route {
        switch configuration.failureMode {
        case .local: return .local(divisor: configuration.gatewayHosts)
        case .open: return .admit
        case .closed:
            var wait = configuration.cooldownMicros
            if case .down(let since) = state, now > since { wait -= min(wait, now - since) }
            return .refuse(retryAfterSeconds: max(1, Int((wait + 999_999) / 1_000_000)))
        }
    }
}
