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
