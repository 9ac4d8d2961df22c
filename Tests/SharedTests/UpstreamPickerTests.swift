import Testing

@testable import Shared

/// The picker seam: a pure function of the candidates and their shared load.
@Suite struct UpstreamPickerTests {
    func order(_ loads: [UpstreamLoad]) -> [Int] {
        let byIndex = Dictionary(uniqueKeysWithValues: loads.map { ($0.index, $0) })
        return [UInt8]().withUnsafeBytes { prompt in
            LeastLoadedPicker().order(loads.map(\.index), prompt: prompt, load: { byIndex[$0]! })
        }
    }

    @Test func wellUpstreamsFirstEachByFewestInFlightTiesInConfigurationOrder() {
        let loads = [
            UpstreamLoad(index: 3, isWell: true, inflightRequests: 5),
            UpstreamLoad(index: 1, isWell: false, inflightRequests: 0),
            UpstreamLoad(index: 7, isWell: true, inflightRequests: 2),
            UpstreamLoad(index: 2, isWell: true, inflightRequests: 2),
            UpstreamLoad(index: 4, isWell: false, inflightRequests: 9),
        ]
        #expect(order(loads) == [7, 2, 3, 1, 4])
    }

    @Test func theSegmentsViewCountsEveryWorkerAndTheBreaker() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        segment.workerSlot(0).requestStarted(upstream: 1)
        segment.workerSlot(5).requestStarted(upstream: 1)
        #expect(segment.upstreamLoad(1) == UpstreamLoad(index: 1, isWell: true, inflightRequests: 2))
        segment.upstream(1).updateBreaker { _ in ((), CircuitBreakerState(phase: .open, failures: 5, since: 1)) }
        #expect(!segment.upstreamLoad(1).isWell)
        segment.upstream(2).health = .down
        #expect(!segment.upstreamLoad(2).isWell)
    }
}

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
