import Logging
import NIOCore
import Redis
import RedisLimits
import RedisURLParsing
import Shared

/// Per-key limits shared by several gateway hosts through Redis (`REDIS_URL`): one per
/// worker, on its event loop, with its own connection. It performs what a
/// ``SharedLimitsStateMachine`` decides: a refusal remembered from Redis is given at once;
/// else one `EVALSHA` takes the request from the key's bucket in Redis (within
/// `REDIS_TIMEOUT`); while Redis cannot be used, the failure mode applies (this host's
/// segment at limit ÷ `GATEWAY_HOSTS`, admit, or 503). Token charges go to Redis after the
/// answer, off the request path, and are sent again with backoff when that fails.
///
/// Loop-bound: every call happens on ``eventLoop`` (the worker's one loop).
final class SharedLimits: Sendable {
    /// What decided a request's admission.
    enum Verdict {
        /// The limits answered: admitted or refused (429), with the headers.
        case decided(RequestLimiter.Admission)
        /// `REDIS_FAILURE_MODE=closed` while Redis cannot be used: 503 with this `Retry-After`.
        case unavailable(retryAfterSeconds: Int)
    }

    let eventLoop: any EventLoop
    private let client: RedisClient
    private let buckets: RedisLimitBuckets
    private let local: RequestLimiter
    private let metrics: GatewayMetrics
    private let logger: Logger
    private let state: NIOLoopBoundBox<State>

    private final class State {
        var machine: SharedLimitsStateMachine
        var retryTimer: Scheduled<Void>?
        /// While Redis cannot be used: the next background probe.
        var probeTimer: Scheduled<Void>?
        /// ``SharedLimitsStateMachine/droppedCharges`` as last counted in the metrics.
        var droppedCounted: UInt64 = 0

        init(machine: SharedLimitsStateMachine) { self.machine = machine }
    }

    /// The shortest wait between two rounds of charge retries.
    static let retryTick: TimeAmount = .milliseconds(100)

    /// Limits in the Redis at `url`, for the worker on `eventLoop`; `local` is this host's
    /// segment (the failure mode's store). Nothing connects before ``start()``.
    init(
        url: RedisURL, limits: GatewayConfiguration.SharedLimits, eventLoop: any EventLoop, local: RequestLimiter, metrics: GatewayMetrics,
        logger: Logger
    ) throws {
        var redis = RedisConfiguration()
        redis.commandTimeout = .nanoseconds(Int64(limits.redisTimeout * 1e9))
        self.eventLoop = eventLoop
        self.client = try RedisClient(url: url, configuration: redis, eventLoop: eventLoop)
        self.buckets = RedisLimitBuckets(client: client)
        self.local = local
        self.metrics = metrics
        self.logger = logger
        let machine = SharedLimitsStateMachine(configuration: RedisLimitModeStateMachine.Configuration(limits))
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(machine: machine), eventLoop: eventLoop)
    }

    /// The limits of `configuration`'s `REDIS_URL`, or nil without one.
    static func make(
        configuration: GatewayConfiguration, eventLoop: any EventLoop, local: RequestLimiter, metrics: GatewayMetrics, logger: Logger
    ) throws -> SharedLimits? {
        guard let url = configuration.sharedLimits.redisURL else { return nil }
        return try SharedLimits(url: url, limits: configuration.sharedLimits, eventLoop: eventLoop, local: local, metrics: metrics, logger: logger)
    }

    /// Connects; succeeds when the first attempt has ended (connected or not), so the
    /// worker's first requests do not meet a connection still being made. Without a
    /// connection the failure mode applies from the start, and says so in the log.
    func start() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit { [self] in
            metrics.limitsStore(.up)
            client.start()
            return client.firstAttemptEnded().assumeIsolated().map { [self] in
                guard !client.isConnected else { return }
                // Why, once: a refused password or an unreachable host is found here.
                logger.warning("limits: cannot connect to Redis: \(client.lastConnectError.map { "\($0)" } ?? "no answer")")
                announce(state.value.machine.probeFailed(.notConnected, now: RequestLimiter.now()))
            }.nonisolated()
        }
    }

    /// Closes the connection (charges still waiting are dropped: the worker is leaving).
    func shutdown() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit { [self] in
            state.value.retryTimer?.cancel()
            state.value.retryTimer = nil
            state.value.probeTimer?.cancel()
            state.value.probeTimer = nil
            metrics.limitsStore(.none)
            return client.shutdown()
        }
    }

    /// Decides the admission of a request from `identity`; `done` runs on the loop, at once
    /// or when Redis answered (within `REDIS_TIMEOUT`).
    func admit(_ identity: ClientIdentity, _ done: @escaping (Verdict) -> Void) {
        eventLoop.preconditionInEventLoop()
        let now = RequestLimiter.now()
        let admission = state.value.machine.admission(keyID: identity.keyID, now: now)
        guard case .askRedis = admission else { return done(decide(admission, identity, now: now)) }
        let sent = NIODeadline.now()
        let tokens = identity.tokensPerMinute > 0 ? GCRA(rate: identity.tokensPerMinute) : nil
        buckets.admit(keyID: identity.keyID, requests: GCRA(rate: identity.requestsPerMinute), tokens: tokens)
            .assumeIsolated().whenComplete { [self] result in
                let now = RequestLimiter.now()
                switch result {
                case .success(let answer):
                    metrics.limitsStoreAnswered(seconds: Double((NIODeadline.now() - sent).nanoseconds) / 1e9)
                    announce(state.value.machine.redisAnswered(keyID: identity.keyID, answer, now: now))
                    done(.decided(RequestLimiter.admission(identity, requests: answer.requests, tokens: answer.tokens)))
                case .failure(let error):
                    let error = Self.redisError(error)
                    metrics.limitsStoreFailed(kind: error.kind)
                    let (change, instead) = state.value.machine.redisFailed(error, now: now)
                    announce(change)
                    done(decide(instead, identity, now: now))
                }
            }
    }

    /// Charges the tokens an answer used: to Redis off the request path (sent again later
    /// if that fails), or to this host's segment while the failure mode is `local`.
    func charge(_ identity: ClientIdentity, tokens used: Int) {
        eventLoop.preconditionInEventLoop()
        guard identity.tokensPerMinute > 0, used > 0 else { return }
        switch state.value.machine.chargeRoute() {
        case .none:
            return
        case .local(let divisor):
            local.charge(identity.dividingLimits(by: divisor), tokens: used)
        case .redis:
            let charge = TokenChargeRetryQueue.Charge(keyID: identity.keyID, gcra: GCRA(rate: identity.tokensPerMinute), cost: UInt64(used))
            send(charge) { [self] error, now in
                announce(state.value.machine.chargeFailed(charge, error: error, now: now))
                countDropped()
                armRetryTimer()
            }
        }
    }

    /// A decision that needs no Redis call.
    private func decide(_ admission: SharedLimitsStateMachine.Admission, _ identity: ClientIdentity, now: UInt64) -> Verdict {
        switch admission {
        case .refuseRemembered(let denial):
            let requests = denial.limit == .requests ? denial.outcome : nil
            let tokens = denial.limit == .tokens ? denial.outcome : nil
            return .decided(RequestLimiter.admission(identity, requests: requests, tokens: tokens))
        case .local(let divisor):
            return .decided(local.admit(identity.dividingLimits(by: divisor), now: now))
        case .admit:
            return .decided(.unlimited)
        case .unavailable(let seconds):
            return .unavailable(retryAfterSeconds: seconds)
        case .askRedis:
            preconditionFailure("a failed Redis admission is decided without Redis")
        }
    }

    /// Sends one charge; `failed` runs if Redis did not take it.
    private func send(_ charge: TokenChargeRetryQueue.Charge, failed: @escaping (RedisError, UInt64) -> Void) {
        let sent = NIODeadline.now()
        buckets.charge(keyID: charge.keyID, gcra: charge.gcra, cost: charge.cost).assumeIsolated().whenComplete { [self] result in
            let now = RequestLimiter.now()
            switch result {
            case .success:
                metrics.limitsStoreAnswered(seconds: Double((NIODeadline.now() - sent).nanoseconds) / 1e9)
                announce(state.value.machine.chargeSucceeded(now: now))
            case .failure(let error):
                let error = Self.redisError(error)
                metrics.limitsStoreFailed(kind: error.kind)
                failed(error, now)
            }
        }
    }

    /// Waits for the next charge due (at least ``retryTick``), then sends those due.
    private func armRetryTimer() {
        let box = state.value
        guard box.retryTimer == nil, let due = box.machine.nextRetryDue else { return }
        let now = RequestLimiter.now()
        let wait = max(TimeAmount.microseconds(Int64(clamping: due > now ? due - now : 0)), Self.retryTick)
        box.retryTimer = eventLoop.assumeIsolated().scheduleTask(in: wait) { [self] in
            state.value.retryTimer = nil
            for pending in state.value.machine.dueRetries(now: RequestLimiter.now()) {
                send(pending.charge) { [self] error, now in
                    announce(state.value.machine.retryFailed(pending, error: error, now: now))
                    countDropped()
                    armRetryTimer()
                }
            }
            armRetryTimer()
        }
    }

    private func countDropped() {
        let box = state.value
        metrics.limitsStoreChargesDropped(box.machine.droppedCharges - box.droppedCounted)
        box.droppedCounted = box.machine.droppedCharges
    }

    /// One log line and the gauge when the store changes; while Redis cannot be used, a
    /// background probe after each cooldown.
    private func announce(_ change: RedisLimitModeStateMachine.ModeChange?) {
        guard let change else { return }
        if change.to == .shared {
            logger.notice("\(change.message)")
            metrics.limitsStore(.up)
            state.value.probeTimer?.cancel()
            state.value.probeTimer = nil
        } else {
            logger.warning("\(change.message)")
            metrics.limitsStore(.down)
            armProbeTimer()
        }
    }

    /// Probes Redis with a `PING` once the cooldown is over, unless a request did; again
    /// after each cooldown until it answers.
    private func armProbeTimer() {
        let box = state.value
        guard box.probeTimer == nil else { return }
        let interval = TimeAmount.microseconds(Int64(clamping: box.machine.probeInterval))
        box.probeTimer = eventLoop.assumeIsolated().scheduleTask(in: interval) { [self] in
            state.value.probeTimer = nil
            guard !state.value.machine.isStoreUp else { return }
            guard state.value.machine.backgroundProbeDue(now: RequestLimiter.now()) else { return armProbeTimer() }
            client.send(command: RedisCommand("PING")).assumeIsolated().whenComplete { [self] result in
                let now = RequestLimiter.now()
                switch result {
                case .success: announce(state.value.machine.probeSucceeded(now: now))
                case .failure(let error): announce(state.value.machine.probeFailed(Self.redisError(error), now: now))
                }
                if !state.value.machine.isStoreUp { armProbeTimer() }
            }
        }
    }

    private static func redisError(_ error: any Error) -> RedisError {
        (error as? RedisError) ?? .connectionClosed
    }
}
