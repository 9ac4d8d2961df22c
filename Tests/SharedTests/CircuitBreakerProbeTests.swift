import Testing

@testable import Shared

/// The breaker's half-open probe always resolves: its client leaving releases it, a passing
/// health check closes it (issue 20, finding 3).
@Suite struct CircuitBreakerProbeTests {
    let cooldown: UInt64 = 1_000_000
    let probeTimeout: UInt64 = 300_000_000

    func halfOpen(at now: UInt64) -> CircuitBreakerState {
        let open = CircuitBreakerState(phase: .open, failures: 5, since: now - 2 * cooldown)
        let (admission, next) = open.admit(now: now, cooldown: cooldown, probeTimeout: probeTimeout)
        #expect(admission == .probe)
        return next!
    }

    @Test func aReleasedProbeLetsTheNextRequestProbeAtOnce() {
        let now: UInt64 = 10_000_000
        let probing = halfOpen(at: now)
        // Before: every request waits out the probe timeout (300 s).
        #expect(probing.admit(now: now + 1_000, cooldown: cooldown, probeTimeout: probeTimeout).0 != .probe)
        let released = probing.releasingProbe()!
        #expect(released.phase == .open)
        let (admission, next) = released.admit(now: now + 1_000, cooldown: cooldown, probeTimeout: probeTimeout)
        #expect(admission == .probe)
        #expect(next?.phase == .halfOpen)
    }

    @Test func releasingTouchesOnlyAHalfOpenBreaker() {
        #expect(CircuitBreakerState().releasingProbe() == nil)
        #expect(CircuitBreakerState(phase: .open, failures: 5, since: 7).releasingProbe() == nil)
    }

    @Test func aPassingHealthCheckClosesAHalfOpenBreakerOnly() {
        let probing = halfOpen(at: 10_000_000)
        #expect(probing.closingAfterHealthyCheck() == CircuitBreakerState())
        #expect(CircuitBreakerState(phase: .open, failures: 5, since: 7).closingAfterHealthyCheck() == nil)
        #expect(CircuitBreakerState().closingAfterHealthyCheck() == nil)
    }
}
