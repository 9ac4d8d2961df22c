import Shared
import Testing

@testable import Supervisor

/// How a replica's cache geometry becomes the prefix index's capacity, and its scrapes the
/// engine's batch capacity.
@Suite struct EngineMetricsPollerTests {
    @Test func aCachesBlocksBecomePromptBlocks() {
        // 2048 blocks of 128 tokens = 262,144 tokens ≈ 1 MiB of text = 4096 blocks of 256 bytes.
        #expect(EngineMetricsPoller.promptBlocks(gpuBlocks: 2048, blockSize: 128) == 4096)
        #expect(EngineMetricsPoller.promptBlocks(gpuBlocks: 1, blockSize: 1) == 1, "never zero: zero means unknown")
        #expect(EngineMetricsPoller.promptBlocks(gpuBlocks: Int.max, blockSize: 16) == PrefixIndex.unknownCapacity)
    }

    @Test func theBatchCapacityIsTheMostSeenRunningOnceRequestsWaited() {
        func next(_ previous: UInt64?, waiting: Double?, running: Double?) -> UInt64? {
            EngineMetricsPoller.batchCapacity(previous: previous, waiting: waiting, running: running)
        }
        #expect(next(nil, waiting: 0, running: 7) == nil, "never seen queueing: no limit known")
        #expect(next(nil, waiting: nil, running: 7) == nil)
        #expect(next(nil, waiting: 2, running: 0) == nil, "nothing running says nothing of the batch")
        #expect(next(nil, waiting: 2, running: nil) == nil)
        // A scrape between two engine steps: requests just arrived wait beside a batch that is
        // not full. A lower capacity than the engine's, for now.
        #expect(next(nil, waiting: 1, running: 5) == 5)
        #expect(next(5, waiting: 0, running: 8) == 8, "8 seen running: the batch holds at least 8")
        #expect(next(8, waiting: 3, running: 6) == 8, "never lowered")
        #expect(next(8, waiting: nil, running: nil) == 8, "a scrape without the figures keeps it")
        #expect(next(nil, waiting: 1, running: 1e300) == 1_000_000_000, "bounded")
    }

    @Test func aNewServerStartTimeMeansARestart() {
        #expect(!EngineMetricsPoller.restarted(previous: nil, now: 1.7e9), "the first scrape")
        #expect(!EngineMetricsPoller.restarted(previous: 1.7e9, now: 1.7e9))
        #expect(!EngineMetricsPoller.restarted(previous: 1.7e9, now: nil), "a page without it says nothing")
        #expect(EngineMetricsPoller.restarted(previous: 1.7e9, now: 1.7e9 + 30))
        #expect(
            !EngineMetricsPoller.restarted(previous: 1.7e9, now: 1.7e9 - 30),
            "an earlier start: another server behind one URL (a load balancer), not a restart")
    }

    @Test func aRestartForgetsWhatTheIndexSaysItHoldsAndItsBatchCapacity() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let status = segment.upstream(0)
        let blocks: [UInt64] = [11, 22, 33]
        func matched() -> Int {
            segment.prefixIndex.match(blocks, clocks: segment.prefixClocks(upstreams: 2))[0]
        }
        let queueing = EngineLoad(waiting: 2, running: 8, blockSize: 16, gpuBlocks: 1280, processStart: 1.7e9)
        #expect(!EngineMetricsPoller.publish(queueing, to: status, previousStart: nil))
        segment.prefixIndex.record(blocks, upstream: 0, counter: status.prefixBlockCounter, clocks: segment.prefixClocks(upstreams: 2))
        #expect(matched() == 3)
        #expect(status.engineBatchCapacity == 8)

        var idle = EngineLoad(waiting: 0, running: 3, blockSize: 16, gpuBlocks: 1280, processStart: 1.7e9)
        #expect(!EngineMetricsPoller.publish(idle, to: status, previousStart: 1.7e9), "the same server")
        #expect(matched() == 3)
        #expect(status.engineBatchCapacity == 8)

        idle.processStart = 1.7e9 + 60
        #expect(EngineMetricsPoller.publish(idle, to: status, previousStart: 1.7e9), "a new server")
        #expect(matched() == 0, "its cache is empty")
        #expect(status.engineBatchCapacity == nil, "learned again: it may run another batch size")
        segment.prefixIndex.record(blocks, upstream: 0, counter: status.prefixBlockCounter, clocks: segment.prefixClocks(upstreams: 2))
        #expect(matched() == 3, "what it serves from now on counts")
    }
}
