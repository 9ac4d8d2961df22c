import Testing

@testable import Shared

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct CircuitBreakerStateTests {
    let cooldown: UInt64 = 10_000_000
    let probeTimeout: UInt64 = 60_000_000

    @Test func opensAfterTheThresholdAndLetsOneProbeThrough() {
        var state = CircuitBreakerState()
        for i in 0..<4 {
            state = state.recordingFailure(now: UInt64(i), threshold: 5)
            #expect(state.phase == .closed)
        }
        state = state.recordingFailure(now: 100, threshold: 5)
        #expect(state.phase == .open)
        #expect(CircuitBreakerState(word: state.word) == state)
        let (early, _) = state.admit(now: 100 + cooldown - 1, cooldown: cooldown, probeTimeout: probeTimeout)
        #expect(early == .reject(retryAfterMicros: 1))
        let (probe, next) = state.admit(now: 100 + cooldown, cooldown: cooldown, probeTimeout: probeTimeout)
        #expect(probe == .probe && next?.phase == .halfOpen)
        let halfOpen = next!
        if case .reject = halfOpen.admit(now: 100 + cooldown + 1, cooldown: cooldown, probeTimeout: probeTimeout).0 {
        } else {
            Issue.record("a second request passed while the probe runs")
        }
        #expect(halfOpen.recordingSuccess().phase == .closed)
        #expect(halfOpen.recordingFailure(now: 5, threshold: 5).phase == .open)
    }

    @Test func aLostProbeIsReplacedAfterItsTimeout() {
        let halfOpen = CircuitBreakerState(phase: .halfOpen, failures: 5, since: 1000)
        #expect(halfOpen.admit(now: 1000 + probeTimeout + 1, cooldown: cooldown, probeTimeout: probeTimeout).0 == .probe)
    }

    @Test func sharedBreakerAdmitsExactlyOneProbeAcrossMappings() throws {
        let a = try SharedSegment.create(supervisorPID: 1)
        let b = try SharedSegment.attach(fileDescriptor: dup(a.fileDescriptor))
        a.upstream(0).updateBreaker { ((), $0.opening(now: 0)) }
        var probes = 0
        for i in 0..<10 {
            let status = (i % 2 == 0 ? a : b).upstream(0)
            let admission = status.updateBreaker { $0.admit(now: cooldown, cooldown: cooldown, probeTimeout: probeTimeout) }
            if admission == .probe { probes += 1 }
        }
        #expect(probes == 1)
    }

    /// A saturated charge keeps the key in debt: the table stores the largest time 48 bits
    /// hold instead of masking it (which wrapped it into the past and wiped the debt).
    @Test func aSaturatedChargeKeepsTheKeyLimited() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let table = RateLimitTable(segment: segment, offset: SegmentLayout.tokenLimitsOffset)
        let gcra = GCRA(rate: 1000)
        let now: UInt64 = 5_000_000_000
        _ = table.charge(key: 42, gcra: gcra, now: now, cost: UInt64.max)
        guard case .limited = table.check(key: 42, gcra: gcra, now: now + 3_600_000_000) else {
            Issue.record("a key charged 2^64 tokens was admitted an hour later")
            return
        }
    }
}
