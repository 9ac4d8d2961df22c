import Testing

@testable import Shared

/// The picker seam: a pure function of the candidates and their shared load.
@Suite struct UpstreamPickerTests {
    @Test func leastLoadedPutsWellUpstreamsFirstEachByFewestInFlightTiesInConfigurationOrder() {
        let candidates = [
            RoutingCandidate(index: 3, isWell: true, inflight: 5),
            RoutingCandidate(index: 1, isWell: false, inflight: 0),
            RoutingCandidate(index: 7, isWell: true, inflight: 2),
            RoutingCandidate(index: 2, isWell: true, inflight: 2),
            RoutingCandidate(index: 4, isWell: false, inflight: 9),
        ]
        #expect(LeastLoadedPicker().decide(RoutingRequest(candidates: candidates)).order == [7, 2, 3, 1, 4])
    }

    @Test func roundRobinTakesTheWellInTurn() {
        let candidates = [
            RoutingCandidate(index: 0, isWell: true, inflight: 0), RoutingCandidate(index: 1, isWell: false, inflight: 0),
            RoutingCandidate(index: 2, isWell: true, inflight: 9), RoutingCandidate(index: 3, isWell: true, inflight: 0),
        ]
        let firsts = (0..<6).map { RoundRobinPicker().decide(RoutingRequest(candidates: candidates, ticket: UInt64($0))).order }
        #expect(firsts.map(\.first) == [0, 2, 3, 0, 2, 3])
        #expect(firsts[1] == [2, 3, 0, 1], "every candidate, the unwell last")
    }

    @Test func theSegmentsViewCountsEveryWorkerTheBreakerAndFreshEngineFigures() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        segment.workerSlot(0).requestStarted(upstream: 1)
        segment.workerSlot(5).requestStarted(upstream: 1)
        segment.upstream(1).publishEngineLoad(EngineLoadSnapshot(waiting: 6, running: 2, kvCacheUsage: 0.5, readAtMicros: 1_000_000))
        #expect(
            segment.routingCandidate(1, nowMicros: 2_000_000, engineMaxAgeMicros: 5_000_000)
                == RoutingCandidate(index: 1, isWell: true, inflight: 2, engineWaiting: 6))
        #expect(segment.routingCandidate(1, nowMicros: 9_000_000, engineMaxAgeMicros: 5_000_000).engineWaiting == 0, "stale: not used")
        segment.upstream(1).updateBreaker { _ in ((), CircuitBreakerState(phase: .open, failures: 5, since: 1)) }
        #expect(!segment.routingCandidate(1, nowMicros: 0, engineMaxAgeMicros: 0).isWell)
        segment.upstream(2).health = .down
        #expect(!segment.routingCandidate(2, nowMicros: 0, engineMaxAgeMicros: 0).isWell)
        #expect(segment.nextRoutingTicket() == 0 && segment.nextRoutingTicket() == 1)
    }
}

/// `routing: cache_aware` as a pure function of the candidates (load, engine queue, cached
/// prefix) and the prompt.
@Suite struct CacheAwarePickerTests {
    let picker = CacheAwarePicker()

    func candidates(_ specs: [(inflight: UInt64, matched: Int)]) -> [RoutingCandidate] {
        specs.enumerated().map { RoutingCandidate(index: $0.offset, isWell: true, inflight: $0.element.inflight, matchedBlocks: $0.element.matched) }
    }

    @Test func theUpstreamHoldingThePrefixWins() {
        let decision = picker.decide(
            RoutingRequest(candidates: candidates([(1, 0), (3, 40), (0, 10), (2, 0)]), promptBlocks: 48, firstBlock: 7))
        #expect(decision.order.first == 1)
        #expect(decision.reason == .prefix)
        #expect(decision.matchedShare == 40.0 / 48.0)
        #expect(Set(decision.order) == [0, 1, 2, 3])
    }

    @Test func aWarmUpstreamIsLeftOnceItsQueueCostsMoreThanThePrefill() {
        // 40 cached blocks are worth 40 / 4 = 10 more requests in flight.
        let near = picker.decide(RoutingRequest(candidates: candidates([(0, 0), (9, 40)]), promptBlocks: 40, firstBlock: 7))
        #expect(near.order.first == 1 && near.reason == .prefix)
        let saturated = picker.decide(RoutingRequest(candidates: candidates([(0, 0), (11, 40)]), promptBlocks: 40, firstBlock: 7))
        #expect(saturated.order == [0, 1] && saturated.reason == .load)
    }

    @Test func theEngineQueueCountsAsLoad() {
        var warm = candidates([(0, 0), (0, 40)])
        warm[1].engineWaiting = 5  // other clients queue there
        #expect(picker.decide(RoutingRequest(candidates: warm, promptBlocks: 40, firstBlock: 7)).order.first == 0)
    }

    @Test func aColdPromptGoesWhereEveryGatewaySendsItUnlessThatOneIsBusy() {
        let idle = candidates([(0, 0), (0, 0), (0, 0), (0, 0)])
        var firsts: [Int: Int] = [:]
        for key in 0..<400 {
            let decision = picker.decide(RoutingRequest(candidates: idle, promptBlocks: 8, firstBlock: UInt64(key)))
            #expect(decision.reason == .cold)
            #expect(decision.order.first == picker.decide(RoutingRequest(candidates: idle, promptBlocks: 8, firstBlock: UInt64(key))).order.first)
            firsts[decision.order.first!, default: 0] += 1
        }
        #expect(firsts.count == 4 && firsts.values.allSatisfy { $0 > 60 }, "keys spread over all upstreams: \(firsts)")
        let key: UInt64 = 12_345
        let hashed = picker.decide(RoutingRequest(candidates: idle, promptBlocks: 8, firstBlock: key)).order[0]
        var busy = idle
        busy[hashed].inflight = 5  // more than coldSlack (4) over the least loaded
        let moved = picker.decide(RoutingRequest(candidates: busy, promptBlocks: 8, firstBlock: key))
        #expect(moved.order.first != hashed && moved.reason == .load)
        busy[hashed].inflight = 4
        #expect(picker.decide(RoutingRequest(candidates: busy, promptBlocks: 8, firstBlock: key)).order.first == hashed)
    }

    @Test func rendezvousHashingMovesOnlyTheKeysOfAVanishedUpstream() {
        let four = candidates([(0, 0), (0, 0), (0, 0), (0, 0)])
        var three = four
        three[2].isWell = false
        for key in 0..<300 {
            let before = picker.decide(RoutingRequest(candidates: four, promptBlocks: 1, firstBlock: UInt64(key))).order[0]
            let after = picker.decide(RoutingRequest(candidates: three, promptBlocks: 1, firstBlock: UInt64(key))).order[0]
            if before != 2 { #expect(after == before) } else { #expect(after != 2) }
        }
    }

    @Test func aSessionSticksUntilItsUpstreamIsSaturated() {
        var ups = candidates([(0, 30), (0, 0), (0, 0)])
        let session: UInt64 = 99
        let home = picker.decide(RoutingRequest(candidates: ups, promptBlocks: 30, firstBlock: 1, sessionKey: session))
        #expect(home.reason == .session)
        let index = home.order[0]
        ups[index].inflight = 3
        #expect(picker.decide(RoutingRequest(candidates: ups, promptBlocks: 30, firstBlock: 1, sessionKey: session)).order[0] == index)
        ups[index].inflight = 9
        let moved = picker.decide(RoutingRequest(candidates: ups, promptBlocks: 30, firstBlock: 1, sessionKey: session))
        #expect(moved.order[0] != index && moved.reason != .session)
    }

    @Test func anUnwellUpstreamIsNeverFirstWhileAnotherIsWell() {
        var ups = candidates([(0, 0), (9, 40)])
        ups[0].isWell = false
        #expect(picker.decide(RoutingRequest(candidates: ups, promptBlocks: 40, firstBlock: 3)).order == [1, 0])
        ups[1].isWell = false
        #expect(picker.decide(RoutingRequest(candidates: ups, promptBlocks: 40, firstBlock: 3)).order == [0, 1], "all unwell: least loaded")
    }

    @Test func aPromptWithoutAWholeBlockGoesByLoad() {
        let decision = picker.decide(RoutingRequest(candidates: candidates([(2, 0), (1, 0)]), promptBlocks: 0, firstBlock: nil))
        #expect(decision.order == [1, 0] && decision.reason == .load && decision.matchedShare == nil)
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

/// `routing:` in the config file.
@Suite struct RoutingConfigurationTests {
    @Test func eachModelNamesItsPolicyCacheAwareByDefault() throws {
        let config = try GatewayConfigurationTests().load(
            file: """
                upstreams:
                  a: { url: http://127.0.0.1:18000 }
                  b: { url: http://127.0.0.1:18001 }
                models:
                  chat: { upstreams: [a, b] }
                  turns: { upstreams: [a, b], routing: round_robin }
                  fewest: { upstreams: [a, b], routing: least_loaded }
                """)
        let policies = Dictionary(uniqueKeysWithValues: config.models.map { ($0.name, $0.routing) })
        #expect(policies == ["chat": .cacheAware, "turns": .roundRobin, "fewest": .leastLoaded])
        let registry = ModelRegistry(configuration: config)
        #expect(registry.configuredTarget("turns")?.routing == .roundRobin)
    }

    @Test func anUnknownPolicyNamesItsKeyAndTheChoices() {
        let error = GatewayConfigurationTests().error {
            try GatewayConfigurationTests().load(
                file: "upstreams:\n  a: { url: http://127.0.0.1:18000 }\nmodels:\n  chat: { upstreams: [a], routing: random }\n")
        }
        #expect(error?.key.hasSuffix("models.chat.routing") == true)
        #expect(error?.reason.contains("cache_aware|least_loaded|round_robin") == true)
    }
}
