import Foundation
import Shared
import Testing

@testable import Supervisor

/// Reading a replica's load out of its `/metrics`: a real vLLM's text (captured from
/// vLLM 0.32.0's CPU build serving a tiny model), the variants other versions and data
/// parallel produce, and garbage, which must give nil figures and never a crash.
@Suite struct EngineLoadTests {
    static func load(_ text: String) -> EngineLoad { EngineLoad(prometheusText: Array(text.utf8)) }

    @Test func aRealVLLMMetricsPageIsRead() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/vllm-0.32.0-cpu.metrics.txt")
        let text = try Data(contentsOf: url)
        let load = EngineLoad(prometheusText: text)
        #expect(load == EngineLoad(waiting: 0, running: 0, kvCacheUsage: 0, blockSize: 128, gpuBlocks: 2048, processStart: 1.79630922883e9))
    }

    @Test func figuresOfSeveralEnginesAddUp() {
        let load = Self.load(
            """
            # TYPE vllm:num_requests_waiting gauge
            vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
            vllm:num_requests_waiting{engine="1",model_name="m"} 4.0
            vllm:num_requests_running{engine="0",model_name="m"} 8.0
            vllm:num_requests_running{engine="1",model_name="m"} 2.0
            vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
            vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
            vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000"} 1.0
            vllm:cache_config_info{block_size="16",engine="1",num_gpu_blocks="1000"} 1.0
            """)
        #expect(load == EngineLoad(waiting: 7, running: 10, kvCacheUsage: 0.375, blockSize: 16, gpuBlocks: 2000))
    }

    @Test func anOlderVLLMsCacheUsageNameIsRead() {
        #expect(Self.load("vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.75\n").kvCacheUsage == 0.75)
        #expect(
            Self.load("vllm:gpu_cache_usage_perc 0.75\nvllm:kv_cache_usage_perc 0.5\n").kvCacheUsage == 0.5, "the current name wins")
    }

    @Test func theNewestLoRASeriesWins() throws {
        let load = Self.load(
            """
            vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql",waiting_lora_adapters=""} 1.7e9
            vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql,chat",waiting_lora_adapters="code"} 1.8e9
            vllm:lora_requests_info{max_lora="4",running_lora_adapters="",waiting_lora_adapters=""} 1.75e9
            """)
        #expect(load.lora == EngineLoad.LoRA(running: ["sql", "chat"], waiting: ["code"], maxAdapters: 4))
        let slots = try #require(load.lora?.slots)
        #expect(slots.maxAdapters == 4 && slots.runningCount == 2 && slots.hasFreeSlot)
        #expect(slots.running.mayContain("sql") && slots.running.mayContain("chat"))
    }

    @Test func labelValuesMayHoldEscapesBracesAndCommas() {
        let load = Self.load(#"vllm:cache_config_info{note="a \"q\" {x=1}, \\ \n",block_size="32",num_gpu_blocks="7"} 1"# + "\n")
        #expect(load.blockSize == 32 && load.gpuBlocks == 7)
    }

    @Test func implausibleValuesAreLeftOut() {
        let load = Self.load(
            """
            vllm:num_requests_waiting NaN
            vllm:num_requests_running -3
            vllm:kv_cache_usage_perc +Inf
            vllm:cache_config_info{block_size="0",num_gpu_blocks="-1"} 1
            """)
        #expect(load == EngineLoad())
        #expect(Self.load("vllm:kv_cache_usage_perc 1.5\n").kvCacheUsage == 1, "a share is clamped to 1")
    }

    @Test func linesMayEndInCRLFOrNotEndAtAll() {
        #expect(Self.load("vllm:num_requests_waiting 2\r\nvllm:num_requests_running 5").running == 5)
        #expect(Self.load("vllm:num_requests_waiting 2\r\n").waiting == 2)
        #expect(Self.load("vllm:num_requests_waiting{engine=\"0\"} 2 1700000000000\n").waiting == 2, "a timestamp may follow")
    }

    @Test func malformedLinesAreSkippedNotTheRest() {
        let load = Self.load(
            """
            vllm:num_requests_waiting{engine="0" 9
            vllm:num_requests_waiting{engine=0} 9
            vllm:num_requests_waiting{engine="0"}
            {engine="0"} 9
            vllm:num_requests_running 4
            """)
        #expect(load == EngineLoad(running: 4))
    }

    @Test func hugeTextOrLinesAreBounded() {
        var text = Array("vllm:num_requests_waiting{x=\"".utf8)
        text += [UInt8](repeating: UInt8(ascii: "a"), count: EngineLoad.maxLineBytes + 10)
        text += Array("\"} 5\nvllm:num_requests_running 3\n".utf8)
        #expect(EngineLoad(prometheusText: text) == EngineLoad(running: 3), "the long line is skipped")
        let huge = [UInt8](repeating: 0x0A, count: EngineLoad.maxBytes) + Array("vllm:num_requests_running 3\n".utf8)
        #expect(EngineLoad(prometheusText: huge) == EngineLoad(), "over the limit: not read at all")
    }

    @Test func randomBytesNeverCrash() {
        var random = SplitMix64(seed: 22)
        let alphabet = Array("vlm:_num{}=\",\\ \n\r0123.e+-#".utf8) + [0x00, 0xFF]
        for _ in 0..<3000 {
            let bytes = (0..<Int.random(in: 0...120, using: &random)).map { _ in alphabet.randomElement(using: &random)! }
            let load = EngineLoad(prometheusText: bytes)
            #expect(load.waiting.map { $0 >= 0 && $0.isFinite } ?? true)
            #expect(load.kvCacheUsage.map { (0...1).contains($0) } ?? true)
        }
    }
}
