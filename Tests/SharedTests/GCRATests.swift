import Testing

@testable import Shared

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
