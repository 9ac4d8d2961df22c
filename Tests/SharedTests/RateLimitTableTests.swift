import Testing

@testable import Shared

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct GCRATests {
    @Test func aFreshBucketAllowsTheBurstThenRefillsAtTheRate() {
        let gcra = GCRA(rate: 60)  // one per second, burst 60
        var tat: UInt64 = 0
        let now: UInt64 = 1_000_000_000
        for _ in 0..<60 {
            guard case .allow(let next) = gcra.take(tat: tat, now: now) else {
                Issue.record("refused inside the burst")
                return
            }
            tat = next
        }
        guard case .deny(let retry) = gcra.take(tat: tat, now: now) else {
            Issue.record("allowed past the burst")
            return
        }
        #expect(retry == 1_000_000)
        #expect(gcra.take(tat: tat, now: now + 999_999) == .deny(retryAfterMicros: 1))
        if case .allow = gcra.take(tat: tat, now: now + 1_000_000) {} else { Issue.record("not refilled after one interval") }
        #expect(gcra.remaining(tat: tat, now: now) == 0)
    }

    @Test func tokenBucketAdmitsWhileATokenIsLeftAndChargesAfterwards() {
        let gcra = GCRA(rate: 100)
        let now: UInt64 = 5_000_000_000
        var tat: UInt64 = 0
        for _ in 0..<10 {
            #expect(gcra.check(tat: tat, now: now) == nil)
            tat = gcra.charge(tat: tat, now: now, cost: 10)
        }
        #expect(gcra.check(tat: tat, now: now) != nil)
    }

    /// A usage an upstream reports is a number from outside: charging any of it saturates
    /// instead of trapping (issue 20, finding 5: 2^64 / (60e6 / TPM) crashed the worker).
    @Test(arguments: [UInt64.max, UInt64.max / 2, 1 << 60, 18_446_744_073_709_551])
    func aHugeChargeSaturates(cost: UInt64) {
        let gcra = GCRA(rate: 1000)
        let now: UInt64 = 5_000_000_000
        #expect(gcra.charge(tat: 0, now: now, cost: cost) >= now)
        #expect(gcra.check(tat: gcra.charge(tat: 0, now: now, cost: cost), now: now) != nil)
        #expect(gcra.take(tat: UInt64.max, now: now, cost: cost) != .allow(newTAT: 0))
        #expect(gcra.remaining(tat: UInt64.max, now: now) == 0)
        #expect(GCRA(rate: Int.max).tolerance > 0)
    }
}

@Suite struct RateLimitTableTests {
    @Test func twoMappingsShareExactlyOneBucket() throws {
        let a = try SharedSegment.create(supervisorPID: 1)
        let b = try SharedSegment.attach(fileDescriptor: dup(a.fileDescriptor))
        let tableA = RateLimitTable(segment: a, offset: SegmentLayout.requestLimitsOffset)
        let tableB = RateLimitTable(segment: b, offset: SegmentLayout.requestLimitsOffset)
        let gcra = GCRA(rate: 100)
        let now: UInt64 = 1_000_000_000
        var allowed = 0
        for i in 0..<300 {
            if case .allowed = (i % 2 == 0 ? tableA : tableB).take(key: 42, gcra: gcra, now: now) { allowed += 1 }
        }
        #expect(allowed == 100)
    }

    @Test func concurrentTakersNeverOvershoot() async throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let table = RateLimitTable(segment: segment, offset: SegmentLayout.requestLimitsOffset)
        let gcra = GCRA(rate: 1000)
        let now: UInt64 = 7_000_000_000
        let allowed = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var n = 0
                    for _ in 0..<500 { if case .allowed = table.take(key: 9, gcra: gcra, now: now) { n += 1 } }
                    return n
                }
            }
            return await group.reduce(0, +)
        }
        #expect(allowed == 1000)
    }

    @Test func onlyRefilledEntriesAreEvictedAndAFullTableRefuses() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let table = RateLimitTable(segment: segment, offset: SegmentLayout.requestLimitsOffset)
        let gcra = GCRA(rate: 2)  // refills one request per 30 s
        var now: UInt64 = 1_000_000_000
        #expect(table.take(key: 1, gcra: gcra, now: now) != .tableFull)
        #expect(table.take(key: 1, gcra: gcra, now: now) != .tableFull)
        guard case .limited = table.take(key: 1, gcra: gcra, now: now) else {
            Issue.record("key 1 should be limited")
            return
        }
        var full = 0
        for key in UInt64(2)...UInt64(20_000) {
            if table.take(key: key, gcra: gcra, now: now) == .tableFull { full += 1 }
        }
        #expect(table.occupied == RateLimitTable.capacity)
        #expect(full > 10_000)
        // key 1 was active (not refilled): never evicted, still limited
        guard case .limited = table.take(key: 1, gcra: gcra, now: now) else {
            Issue.record("an active key lost its bucket")
            return
        }
        // a minute later every bucket is full again: new keys evict them
        now += 61_000_000
        for key in UInt64(30_000)...UInt64(30_100) {
            #expect(table.take(key: key, gcra: gcra, now: now) != .tableFull)
        }
    }
}

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
