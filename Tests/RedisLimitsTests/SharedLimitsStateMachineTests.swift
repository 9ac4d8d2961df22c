import Redis
import Shared
import Testing

@testable import RedisLimits

/// One worker's shared limits as a whole: remembered refusals before Redis, the failure
/// mode for a request whose Redis call failed, where charges go, and their retries.
@Suite struct SharedLimitsStateMachineTests {
    static let second: UInt64 = 1_000_000
    static let key: UInt64 = 0xABCD

    static func machine(_ mode: GatewayConfiguration.RedisFailureMode = .local, hosts: Int = 3) -> SharedLimitsStateMachine {
        SharedLimitsStateMachine(configuration: .init(failureMode: mode, gatewayHosts: hosts))
    }

    static let allowed = RedisAdmission(requests: .allowed(remaining: 5, resetMicros: 10), tokens: nil)

    @Test func asksRedisWhileItAnswers() {
        var machine = Self.machine()
        for t in 0..<10 {
            #expect(machine.admission(keyID: Self.key, now: UInt64(t)) == .askRedis)
            #expect(machine.redisAnswered(keyID: Self.key, Self.allowed, now: UInt64(t)) == nil)
        }
        #expect(machine.isStoreUp)
        #expect(machine.chargeRoute() == .redis)
    }

    @Test func aRefusalIsRememberedUntilItsRetryTimeThenRedisIsAskedAgain() {
        var machine = Self.machine()
        let refused = RedisAdmission(requests: .limited(retryAfterMicros: 2 * Self.second, resetMicros: 60 * Self.second), tokens: nil)
        #expect(machine.admission(keyID: Self.key, now: 0) == .askRedis)
        _ = machine.redisAnswered(keyID: Self.key, refused, now: 0)
        guard case .refuseRemembered(let denial) = machine.admission(keyID: Self.key, now: Self.second) else {
            Issue.record("the refusal was not remembered")
            return
        }
        #expect(denial.limit == .requests)
        #expect(denial.outcome == .limited(retryAfterMicros: Self.second, resetMicros: 59 * Self.second))
        // Another key is not affected; the key itself is asked about again at its retry time.
        #expect(machine.admission(keyID: Self.key + 1, now: Self.second) == .askRedis)
        #expect(machine.admission(keyID: Self.key, now: 2 * Self.second) == .askRedis)
    }

    @Test func aTokenRefusalIsRememberedAsSuch() {
        var machine = Self.machine()
        let inDebt = RedisAdmission(
            requests: .allowed(remaining: 3, resetMicros: 1), tokens: .limited(retryAfterMicros: 5 * Self.second, resetMicros: 9 * Self.second))
        _ = machine.redisAnswered(keyID: Self.key, inDebt, now: 0)
        guard case .refuseRemembered(let denial) = machine.admission(keyID: Self.key, now: 0) else {
            Issue.record("the refusal was not remembered")
            return
        }
        #expect(denial.limit == .tokens)
    }

    @Test(arguments: [
        (GatewayConfiguration.RedisFailureMode.local, SharedLimitsStateMachine.Admission.local(divisor: 3)),
        (.open, .admit),
        (.closed, .unavailable(retryAfterSeconds: 1)),
    ])
    func aFailedCallDecidesThatRequestByTheFailureMode(mode: GatewayConfiguration.RedisFailureMode, expected: SharedLimitsStateMachine.Admission) {
        var machine = Self.machine(mode)
        let (change, instead) = machine.redisFailed(.timeout, now: 0)
        #expect(change == nil)  // one timeout does not open the breaker
        #expect(instead == expected)
        #expect(machine.isStoreUp)
        #expect(machine.admission(keyID: Self.key, now: 1) == .askRedis)
    }

    @Test func theBreakerOpensThenAProbeBringsRedisBack() {
        var machine = Self.machine(.local, hosts: 2)
        _ = machine.redisFailed(.timeout, now: 0)
        _ = machine.redisFailed(.timeout, now: 1)
        let (change, _) = machine.redisFailed(.timeout, now: 2)
        #expect(change?.to == .degraded(.local))
        #expect(!machine.isStoreUp)
        #expect(machine.admission(keyID: Self.key, now: 3) == .local(divisor: 2))
        #expect(machine.chargeRoute() == .local(divisor: 2))
        // After the cooldown one request probes; its success brings the limits back.
        #expect(machine.admission(keyID: Self.key, now: 2 + Self.second) == .askRedis)
        #expect(machine.admission(keyID: Self.key, now: 3 + Self.second) == .local(divisor: 2))
        #expect(machine.redisAnswered(keyID: Self.key, Self.allowed, now: 4 + Self.second)?.to == .shared)
        #expect(machine.admission(keyID: Self.key, now: 5 + Self.second) == .askRedis)
    }

    @Test(arguments: [GatewayConfiguration.RedisFailureMode.open, .closed])
    func chargesGoNowhereWhileOpenOrClosedApplies(mode: GatewayConfiguration.RedisFailureMode) {
        var machine = Self.machine(mode)
        _ = machine.redisFailed(.notConnected, now: 0)
        #expect(machine.chargeRoute() == .none)
    }

    @Test func aFailedChargeIsSentAgainOnlyWhileRedisAnswers() {
        var machine = Self.machine()
        let charge = TokenChargeRetryQueue.Charge(keyID: Self.key, gcra: GCRA(rate: 1000), cost: 40)
        #expect(machine.chargeFailed(charge, error: .timeout, now: 0) == nil)
        #expect(machine.pendingCharges == 1)
        let due = machine.nextRetryDue!
        #expect(machine.dueRetries(now: due - 1).isEmpty)
        let retry = machine.dueRetries(now: due)
        #expect(retry.map(\.charge) == [charge])
        // It fails again, and Redis goes away: nothing is sent while the breaker is open.
        _ = machine.retryFailed(retry[0], error: .timeout, now: due)
        _ = machine.redisFailed(.notConnected, now: due)
        #expect(!machine.isStoreUp)
        #expect(machine.dueRetries(now: due + 60 * Self.second).isEmpty)
        #expect(machine.pendingCharges == 1)
        // Redis answers a probe: the charge goes.
        #expect(machine.admission(keyID: Self.key, now: due + 60 * Self.second) == .askRedis)
        _ = machine.redisAnswered(keyID: Self.key, Self.allowed, now: due + 60 * Self.second)
        #expect(machine.dueRetries(now: due + 60 * Self.second).map(\.charge) == [charge])
        #expect(machine.chargeSucceeded(now: due + 60 * Self.second) == nil)
        #expect(machine.pendingCharges == 0)
        #expect(machine.droppedCharges == 0)
    }

    @Test func aBackgroundProbeGoesOncePerCooldownWhileNoRequestProbes() {
        var machine = Self.machine()
        #expect(machine.backgroundProbeDue(now: 0) == false)  // Redis in use: nothing to probe
        #expect(machine.probeFailed(.notConnected, now: 0)?.to == .degraded(.local))
        #expect(machine.backgroundProbeDue(now: machine.probeInterval - 1) == false)
        #expect(machine.backgroundProbeDue(now: machine.probeInterval) == true)
        // That probe is under way: neither a request nor another probe tests Redis now.
        #expect(machine.backgroundProbeDue(now: machine.probeInterval + 1) == false)
        #expect(machine.admission(keyID: Self.key, now: machine.probeInterval + 1) == .local(divisor: 3))
        #expect(machine.probeFailed(.timeout, now: machine.probeInterval + 2) == nil)
        #expect(machine.backgroundProbeDue(now: 2 * machine.probeInterval + 2) == true)
        #expect(machine.probeSucceeded(now: 2 * machine.probeInterval + 3)?.to == .shared)
        #expect(machine.isStoreUp)
    }
}
