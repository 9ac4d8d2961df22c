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
}
