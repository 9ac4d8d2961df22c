import Redis
import Shared
import Testing

@testable import RedisLimits

/// The breaker on Redis and the failure modes: which store each request uses, and one
/// mode change per change.
@Suite struct RedisLimitModeStateMachineTests {
    static let second: UInt64 = 1_000_000

    static func machine(_ mode: GatewayConfiguration.RedisFailureMode = .local, hosts: Int = 3) -> RedisLimitModeStateMachine {
        RedisLimitModeStateMachine(configuration: .init(failureMode: mode, gatewayHosts: hosts))
    }

    @Test func startsSharedAndStaysSoWhileRedisAnswers() {
        var machine = Self.machine()
        #expect(machine.mode == .shared && machine.isStoreUp)
        for t in 0..<100 {
            #expect(machine.route(now: UInt64(t)) == .redis(probe: false))
            #expect(machine.commandSucceeded(now: UInt64(t)) == nil)
        }
    }

    @Test func opensAfterTheThresholdOfConsecutiveFailuresOnly() {
        var machine = Self.machine()
        #expect(machine.commandFailed(.timeout, now: 1) == nil)
        #expect(machine.commandFailed(.timeout, now: 2) == nil)
        #expect(machine.commandSucceeded(now: 3) == nil)  // not consecutive: counting starts over
        #expect(machine.commandFailed(.timeout, now: 4) == nil)
        #expect(machine.commandFailed(.server("BUSY"), now: 5) == nil)
        let change = machine.commandFailed(.connectionClosed, now: 6)
        #expect(change?.from == .shared && change?.to == .degraded(.local) && change?.cause == "connection_closed")
        #expect(!machine.isStoreUp)
        #expect(machine.route(now: 7) == .local(divisor: 3))
    }

    @Test func noConnectionOpensAtOnce() {
        var machine = Self.machine(.open)
        let change = machine.commandFailed(.notConnected, now: 1)
        #expect(change?.to == .degraded(.open) && change?.cause == "not_connected")
        #expect(machine.route(now: 2) == .admit)
    }

    @Test func eachFailureModeRoutes() {
        for (mode, expected) in [
            (GatewayConfiguration.RedisFailureMode.local, RedisLimitModeStateMachine.Route.local(divisor: 2)), (.open, .admit),
            (.closed, .refuse(retryAfterSeconds: 1)),
        ] {
            var machine = Self.machine(mode, hosts: 2)
            _ = machine.commandFailed(.notConnected, now: 10)
            #expect(machine.route(now: 10) == expected)
            #expect(machine.mode == .degraded(mode))
        }
    }

    @Test func closedModeRetryAfterIsTheCooldownLeft() {
        var configuration = RedisLimitModeStateMachine.Configuration(failureMode: .closed, gatewayHosts: 1)
        configuration.cooldownMicros = 5 * Self.second
        var machine = RedisLimitModeStateMachine(configuration: configuration)
        _ = machine.commandFailed(.notConnected, now: 0)
        #expect(machine.route(now: 0) == .refuse(retryAfterSeconds: 5))
        #expect(machine.route(now: 3 * Self.second + 1) == .refuse(retryAfterSeconds: 2))
        #expect(machine.route(now: 5 * Self.second - 1) == .refuse(retryAfterSeconds: 1))
    }

    @Test func oneProbeAfterTheCooldownAndItsSuccessClosesOnce() {
        var machine = Self.machine()
        #expect(machine.commandFailed(.notConnected, now: 0) != nil)
        #expect(machine.route(now: Self.second - 1) == .local(divisor: 3))
        #expect(machine.route(now: Self.second) == .redis(probe: true))
        // While the probe is out, the others keep to the failure mode.
        #expect(machine.route(now: Self.second + 1) == .local(divisor: 3))
        #expect(machine.route(now: Self.second + 2) == .local(divisor: 3))
        let change = machine.commandSucceeded(now: Self.second + 3)
        #expect(change == .init(from: .degraded(.local), to: .shared, cause: nil, gatewayHosts: 3))
        #expect(machine.route(now: Self.second + 4) == .redis(probe: false))
        #expect(machine.commandSucceeded(now: Self.second + 5) == nil)  // already shared: no second event
    }

    @Test func aFailedProbeWaitsAnotherCooldownWithoutAnEvent() {
        var machine = Self.machine()
        _ = machine.commandFailed(.notConnected, now: 0)
        #expect(machine.route(now: Self.second) == .redis(probe: true))
        #expect(machine.commandFailed(.timeout, now: Self.second + 10) == nil)
        #expect(machine.mode == .degraded(.local))
        #expect(machine.route(now: 2 * Self.second) == .local(divisor: 3))
        #expect(machine.route(now: 2 * Self.second + 10) == .redis(probe: true))
    }

    @Test func aLostProbeIsReplacedAfterACooldown() {
        var machine = Self.machine()
        _ = machine.commandFailed(.notConnected, now: 0)
        #expect(machine.route(now: Self.second) == .redis(probe: true))
        #expect(machine.route(now: 2 * Self.second - 1) == .local(divisor: 3))
        #expect(machine.route(now: 2 * Self.second) == .redis(probe: true))
    }

    @Test func lateOutcomesWhileDownChangeNothing() {
        var machine = Self.machine()
        _ = machine.commandFailed(.notConnected, now: 0)
        // Replies of commands sent before the breaker opened.
        #expect(machine.commandSucceeded(now: 5) == nil)
        #expect(machine.commandFailed(.timeout, now: 6) == nil)
        #expect(machine.mode == .degraded(.local))
        #expect(machine.route(now: Self.second - 1) == .local(divisor: 3))  // the cooldown did not restart
        #expect(machine.route(now: Self.second) == .redis(probe: true))
    }

    @Test func exactlyOneEventPerChangeOverManyCycles() {
        var machine = Self.machine(.closed, hosts: 1)
        var changes: [RedisLimitModeStateMachine.ModeChange] = []
        var now: UInt64 = 0
        for cycle in 0..<20 {
            for _ in 0..<10 {
                now += 1000
                if case .redis = machine.route(now: now) {
                    // Redis is down in even cycles, up in odd ones.
                    if let change = cycle % 2 == 0 ? machine.commandFailed(.timeout, now: now) : machine.commandSucceeded(now: now) {
                        changes.append(change)
                    }
                }
            }
            now += Self.second
        }
        #expect(changes.count == 20)
        for (index, change) in changes.enumerated() {
            #expect(change.to == (index % 2 == 0 ? .degraded(.closed) : .shared))
            #expect(change.from != change.to)
        }
    }

    @Test func theLogLineSaysWhatAppliesAndNothingSecret() {
        var local = Self.machine(.local, hosts: 3)
        let down = local.commandFailed(.notConnected, now: 0)
        #expect(down?.message == "limits: Redis cannot be used (not_connected); enforcing this host's limits at limit ÷ 3 (GATEWAY_HOSTS) until it answers")
        _ = local.route(now: Self.second)
        #expect(local.commandSucceeded(now: Self.second)?.message == "limits: Redis answers again; per-key limits are shared across hosts")
        var closed = Self.machine(.closed)
        #expect(closed.commandFailed(.notConnected, now: 0)?.message.contains("503") == true)
        var open = Self.machine(.open)
        #expect(open.commandFailed(.notConnected, now: 0)?.message.contains("REDIS_FAILURE_MODE=open") == true)
    }

    @Test func configurationComesFromTheSettings() {
        var limits = GatewayConfiguration.SharedLimits()
        limits.failureMode = .open
        limits.gatewayHosts = 4
        let configuration = RedisLimitModeStateMachine.Configuration(limits)
        #expect(configuration.failureMode == .open && configuration.gatewayHosts == 4)
        #expect(configuration.failureThreshold == 3 && configuration.cooldownMicros == 1_000_000)
        #expect(RedisLimitModeStateMachine.Configuration(failureMode: .local, gatewayHosts: 0).gatewayHosts == 1)
    }
}
