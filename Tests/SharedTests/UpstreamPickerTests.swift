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
        for index in [0, 5] { segment.workerSlot(index).reset(generation: 1, now: MonotonicInstant(nanoseconds: 1)) }
        segment.workerSlot(0).requestStarted(upstream: 1)
        segment.workerSlot(5).requestStarted(upstream: 1)
        segment.workerSlot(5).prefillStarted(upstream: 1, blocks: 9)
        segment.upstream(1).publishEngineLoad(EngineLoadSnapshot(waiting: 6, running: 2, kvCacheUsage: 0.5, readAtMicros: 1_000_000))
        #expect(
            segment.routingCandidate(1, model: "m", nowMicros: 2_000_000, engineMaxAgeMicros: 5_000_000)
                == RoutingCandidate(index: 1, isWell: true, inflight: 2, engineWaiting: 6, pendingPrefillBlocks: 9))
        #expect(segment.routingCandidate(1, model: "m", nowMicros: 9_000_000, engineMaxAgeMicros: 5_000_000).engineWaiting == 0, "stale: not used")
        segment.upstream(1).updateBreaker { _ in ((), CircuitBreakerState(phase: .open, failures: 5, since: 1)) }
        #expect(!segment.routingCandidate(1, model: "m", nowMicros: 0, engineMaxAgeMicros: 0).isWell)
        segment.upstream(2).health = .down
        #expect(!segment.routingCandidate(2, model: "m", nowMicros: 0, engineMaxAgeMicros: 0).isWell)
        #expect(segment.nextRoutingTicket() == 0 && segment.nextRoutingTicket() == 1)
    }

    @Test func requestsInFlightBeyondTheEnginesBatchCountAsQueuedAtOnce() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        segment.workerSlot(0).reset(generation: 1, now: MonotonicInstant(nanoseconds: 1))
        for _ in 0..<11 { segment.workerSlot(0).requestStarted(upstream: 2) }
        segment.upstream(2).publishEngineLoad(EngineLoadSnapshot(waiting: 1, running: 8, kvCacheUsage: 0.5, readAtMicros: 1_000_000))
        func waiting(now: UInt64) -> UInt64 { segment.routingCandidate(2, model: "m", nowMicros: now, engineMaxAgeMicros: 5_000_000).engineWaiting }
        #expect(waiting(now: 2_000_000) == 1, "batch capacity not seen yet: the scrape's figure")
        segment.upstream(2).engineBatchCapacity = 8
        #expect(waiting(now: 2_000_000) == 4, "11 in flight, 8 run at once: 3 wait, and one more would")
        #expect(waiting(now: 90_000_000) == 4, "the capacity does not go stale with the scrape")
        segment.upstream(2).publishEngineLoad(EngineLoadSnapshot(waiting: 5, running: 8, kvCacheUsage: 0.5, readAtMicros: 1_000_000))
        #expect(waiting(now: 2_000_000) == 5, "other clients' requests queue there too")
        segment.upstream(2).publishEngineLoad(EngineLoadSnapshot(waiting: 0, running: 8, kvCacheUsage: 0.5, readAtMicros: 1_000_000))
        for _ in 0..<3 { segment.workerSlot(0).requestEnded(upstream: 2) }
        #expect(waiting(now: 2_000_000) == 1, "8 in flight fill the batch: one more waits")
        segment.workerSlot(0).requestEnded(upstream: 2)
        #expect(waiting(now: 2_000_000) == 0, "a place is free")
    }

    @Test func leastLoadedPutsUpstreamsRunningTheAdapterFirstThenAFreeSlot() {
        let candidates = [
            RoutingCandidate(index: 0, isWell: true, inflight: 0, adapter: .full),
            RoutingCandidate(index: 1, isWell: true, inflight: 3, adapter: .freeSlot),
            RoutingCandidate(index: 2, isWell: false, inflight: 0, adapter: .running),
            RoutingCandidate(index: 3, isWell: true, inflight: 1, adapter: .freeSlot),
        ]
        let decision = LeastLoadedPicker().decide(RoutingRequest(candidates: candidates))
        #expect(decision.order == [3, 1, 0, 2], "an unwell upstream running it is still last")
        #expect(decision.reason == .lora)
        var running = candidates
        running[0].adapter = .running
        #expect(LeastLoadedPicker().decide(RoutingRequest(candidates: running)).order == [0, 3, 1, 2])
        let base = candidates.map { RoutingCandidate(index: $0.index, isWell: $0.isWell, inflight: $0.inflight) }
        #expect(LeastLoadedPicker().decide(RoutingRequest(candidates: base)) == RoutingDecision(order: [0, 3, 1, 2], reason: .load))
    }

    @Test func theSegmentsViewTellsWhereAnAdapterRuns() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let status = segment.upstream(0)
        status.publishModels([.init("base"), .init("sql-lora", parent: "base"), .init("chat-lora", parent: "base")])
        func fit(_ model: String, now: UInt64 = 2_000_000) -> RoutingCandidate.AdapterFit {
            segment.routingCandidate(0, model: model, nowMicros: now, engineMaxAgeMicros: 5_000_000).adapter
        }
        #expect(fit("sql-lora") == .notAdapter, "no LoRA figures yet")
        let running = EngineLoadSnapshot.LoRASlots(maxAdapters: 2, runningCount: 1, running: AdapterFilter(["sql-lora"]))
        status.publishEngineLoad(EngineLoadSnapshot(waiting: 0, running: 1, kvCacheUsage: 0, lora: running, readAtMicros: 1_000_000))
        #expect(fit("sql-lora") == .running)
        #expect(fit("chat-lora") == .freeSlot)
        #expect(fit("base") == .notAdapter, "the base model takes no adapter slot")
        #expect(fit("sql-lora", now: 9_000_000) == .notAdapter, "stale figures are not used")
        var full = running
        full.runningCount = 2
        status.publishEngineLoad(EngineLoadSnapshot(waiting: 0, running: 1, kvCacheUsage: 0, lora: full, readAtMicros: 1_000_000))
        #expect(fit("chat-lora") == .full)
        #expect(status.engineLoad?.lora == full)
        status.publishEngineLoad(EngineLoadSnapshot(waiting: 0, running: 1, kvCacheUsage: 0, readAtMicros: 1_000_000))
        #expect(status.engineLoad?.lora == nil && fit("sql-lora") == .notAdapter)
    }

    @Test func theAdapterFilterNeverMissesANameAndRarelyClaimsOne() {
        let names = (0..<8).map { "adapter-\($0)" }
        let filter = AdapterFilter(names)
        #expect(names.allSatisfy(filter.mayContain))
        let claimed = (0..<10_000).filter { filter.mayContain("other-\($0)") }.count
        #expect(claimed < 200, "\(claimed) false claims in 10,000 with 8 names")
        #expect(!AdapterFilter().mayContain("adapter-0"))
    }
}
