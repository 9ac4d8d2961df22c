import Shared
import Testing

@testable import Supervisor

/// How a replica's cache geometry becomes the prefix index's capacity.
@Suite struct EngineMetricsPollerTests {
    @Test func aCachesBlocksBecomePromptBlocks() {
        // 2048 blocks of 128 tokens = 262,144 tokens ≈ 1 MiB of text = 4096 blocks of 256 bytes.
        #expect(EngineMetricsPoller.promptBlocks(gpuBlocks: 2048, blockSize: 128) == 4096)
        #expect(EngineMetricsPoller.promptBlocks(gpuBlocks: 1, blockSize: 1) == 1, "never zero: zero means unknown")
        #expect(EngineMetricsPoller.promptBlocks(gpuBlocks: Int.max, blockSize: 16) == PrefixIndex.unknownCapacity)
    }
}
