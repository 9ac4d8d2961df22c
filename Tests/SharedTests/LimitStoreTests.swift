import Testing

@testable import Shared

/// The limit-store seam: the limiter takes its buckets from whatever store it is given.
@Suite struct LimitStoreTests {
    final class CountingStore: LimitStore, @unchecked Sendable {
        let inner: RateLimitTable
        var calls: [String] = []
        init(_ inner: RateLimitTable) { self.inner = inner }
        func take(key: UInt64, gcra: GCRA, now: UInt64, cost: UInt64) -> RateLimitTable.Outcome {
            calls.append("take")
            return inner.take(key: key, gcra: gcra, now: now, cost: cost)
        }
        func check(key: UInt64, gcra: GCRA, now: UInt64) -> RateLimitTable.Outcome {
            calls.append("check")
            return inner.check(key: key, gcra: gcra, now: now)
        }
        func charge(key: UInt64, gcra: GCRA, now: UInt64, cost: UInt64) -> RateLimitTable.Outcome {
            calls.append("charge \(cost)")
            return inner.charge(key: key, gcra: gcra, now: now, cost: cost)
        }
    }

    @Test func theLimiterGoesThroughItsStores() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let requests = CountingStore(RateLimitTable(segment: segment, offset: SegmentLayout.requestLimitsOffset))
        let tokens = CountingStore(RateLimitTable(segment: segment, offset: SegmentLayout.tokenLimitsOffset))
        let limiter = RequestLimiter(requests: requests, tokens: tokens)
        let identity = ClientIdentity(name: "a", keyID: 42, models: nil, requestsPerMinute: 2, tokensPerMinute: 100)
        #expect(limiter.admit(identity, now: 1_000_000).refusal == nil)
        limiter.charge(identity, tokens: 150, now: 1_000_000)
        #expect(limiter.admit(identity, now: 1_000_000).refusal == .tokens)
        #expect(requests.calls == ["take", "take"])
        #expect(tokens.calls == ["check", "charge 150", "check"])
    }
}
