import Shared

/// What one vLLM replica says of its own load, read from its `/metrics` (Prometheus text):
/// the figures routing needs and nothing else. A figure the text does not carry (an older
/// vLLM, another server, garbage) is nil, and routing goes by the workers' own counts.
///
/// A replica may run several engines (data parallel: one series per `engine` label): queue
/// lengths and cache blocks add up, cache usage is their mean.
struct EngineLoad: Equatable, Sendable {
    /// `vllm:num_requests_waiting`: requests queued, not yet scheduled.
    var waiting: Double?
    /// `vllm:num_requests_running`: requests in the running batch.
    var running: Double?
    /// `vllm:kv_cache_usage_perc` (older vLLM: `vllm:gpu_cache_usage_perc`): 0 to 1.
    var kvCacheUsage: Double?
    /// `block_size` of `vllm:cache_config_info`: tokens per KV-cache block.
    var blockSize: Int?
    /// `num_gpu_blocks` of `vllm:cache_config_info`: blocks the KV cache holds.
    var gpuBlocks: Int?
    /// `vllm:lora_requests_info` (the newest series: its value is the time it was set).
    var lora: LoRA?
    /// `process_start_time_seconds` (the server process's start, Unix seconds): a change
    /// means the engine restarted, its prefix cache empty.
    var processStart: Double?

    struct LoRA: Equatable, Sendable {
        var running: [String]
        var waiting: [String]
        var maxAdapters: Int

        /// What the workers route by.
        var slots: EngineLoadSnapshot.LoRASlots {
            EngineLoadSnapshot.LoRASlots(
                maxAdapters: UInt32(clamping: maxAdapters), runningCount: UInt32(clamping: running.count), running: AdapterFilter(running))
        }
    }

    /// Text longer than this is not parsed (a replica's `/metrics` is tens of kilobytes).
    static let maxBytes = 4 << 20
    /// A longer line is skipped (a label value of a megabyte is nobody's metric).
    static let maxLineBytes = 64 << 10

    init(
        waiting: Double? = nil, running: Double? = nil, kvCacheUsage: Double? = nil, blockSize: Int? = nil, gpuBlocks: Int? = nil, lora: LoRA? = nil,
        processStart: Double? = nil
    ) {
        self.processStart = processStart
        self.waiting = waiting
        self.running = running
        self.kvCacheUsage = kvCacheUsage
        self.blockSize = blockSize
        self.gpuBlocks = gpuBlocks
        self.lora = lora
    }

    /// Reads the figures out of a `/metrics` answer. Never fails: what cannot be read is
    /// left nil; a text over ``maxBytes`` is not read at all.
    init(prometheusText text: some Collection<UInt8>) {
        self.init()
        guard text.count <= Self.maxBytes else { return }
        var usageSum = 0.0
        var usageCount = 0
        var legacyUsageSum = 0.0
        var legacyUsageCount = 0
        var loraStamp = -Double.infinity
        var line: [UInt8] = []
        line.reserveCapacity(512)
        var tooLong = false
        func take(_ line: [UInt8]) {
            guard let sample = Sample(line: line) else { return }
            switch sample.name {
            case "vllm:num_requests_waiting":
                if let value = sample.count { waiting = (waiting ?? 0) + value }
            case "vllm:num_requests_running":
                if let value = sample.count { running = (running ?? 0) + value }
            case "vllm:kv_cache_usage_perc":
                if let value = sample.ratio {
                    usageSum += value
                    usageCount += 1
                }
            case "vllm:gpu_cache_usage_perc":
                if let value = sample.ratio {
                    legacyUsageSum += value
                    legacyUsageCount += 1
                }
            case "process_start_time_seconds":
                if let value = sample.count, value > 0 { processStart = value }
            case "vllm:cache_config_info":
                if let size = sample.label("block_size").flatMap(Int.init), size > 0 { blockSize = size }
                if let blocks = sample.label("num_gpu_blocks").flatMap(Int.init), blocks > 0 { gpuBlocks = (gpuBlocks ?? 0) + blocks }
            case "vllm:lora_requests_info":
                guard let stamp = sample.value, stamp.isFinite, stamp >= loraStamp,
                    let maxAdapters = sample.label("max_lora").flatMap(Int.init), maxAdapters >= 0
                else { return }
                loraStamp = stamp
                lora = LoRA(
                    running: Self.adapters(sample.label("running_lora_adapters")),
                    waiting: Self.adapters(sample.label("waiting_lora_adapters")), maxAdapters: maxAdapters)
            default:
                break
            }
        }
        for byte in text {
            if byte == 0x0A {
                if !tooLong { take(line) }
                line.removeAll(keepingCapacity: true)
                tooLong = false
            } else if !tooLong {
                if line.count >= Self.maxLineBytes {
                    tooLong = true
                } else {
                    line.append(byte)
                }
            }
        }
        if !tooLong { take(line) }
        if usageCount > 0 {
            kvCacheUsage = usageSum / Double(usageCount)
        } else if legacyUsageCount > 0 {
            kvCacheUsage = legacyUsageSum / Double(legacyUsageCount)
        }
    }

    /// `"a,b"` → `["a", "b"]`; empty names dropped.
    private static func adapters(_ list: String?) -> [String] {
        (list ?? "").split(separator: ",").map { String($0) }.filter { !$0.isEmpty }
    }
}

/// One sample line of the Prometheus text format: `name{label="value",...} value [timestamp]`.
/// Comments, blank lines and anything malformed give nil.
private struct Sample {
    let name: String
    private let labels: [(String, String)]
    let value: Double?

    init?(line: [UInt8]) {
        var i = 0
        func skipBlanks() { while i < line.count, line[i] == 0x20 || line[i] == 0x09 || line[i] == 0x0D { i += 1 } }
        skipBlanks()
        guard i < line.count, line[i] != UInt8(ascii: "#") else { return nil }
        let nameStart = i
        while i < line.count, Self.isNameByte(line[i]) { i += 1 }
        guard i > nameStart else { return nil }
        name = String(decoding: line[nameStart..<i], as: UTF8.self)
        var labels: [(String, String)] = []
        if i < line.count, line[i] == UInt8(ascii: "{") {
            i += 1
            while true {
                skipBlanks()
                guard i < line.count else { return nil }
                if line[i] == UInt8(ascii: "}") {
                    i += 1
                    break
                }
                let keyStart = i
                while i < line.count, Self.isNameByte(line[i]), line[i] != UInt8(ascii: ":") { i += 1 }
                guard i > keyStart, i < line.count, line[i] == UInt8(ascii: "=") else { return nil }
                let key = String(decoding: line[keyStart..<i], as: UTF8.self)
                i += 1
                guard i < line.count, line[i] == UInt8(ascii: "\"") else { return nil }
                i += 1
                var value: [UInt8] = []
                var closed = false
                while i < line.count {
                    let byte = line[i]
                    i += 1
                    if byte == UInt8(ascii: "\"") {
                        closed = true
                        break
                    }
                    if byte == UInt8(ascii: "\\") {
                        guard i < line.count else { return nil }
                        let escaped = line[i]
                        i += 1
                        value.append(escaped == UInt8(ascii: "n") ? 0x0A : escaped)
                    } else {
                        value.append(byte)
                    }
                }
                guard closed else { return nil }
                labels.append((key, String(decoding: value, as: UTF8.self)))
                skipBlanks()
                if i < line.count, line[i] == UInt8(ascii: ",") { i += 1 }
            }
        }
        self.labels = labels
        skipBlanks()
        let valueStart = i
        while i < line.count, line[i] != 0x20, line[i] != 0x09, line[i] != 0x0D { i += 1 }
        guard i > valueStart else { return nil }
        value = Double(String(decoding: line[valueStart..<i], as: UTF8.self))
    }

    func label(_ key: String) -> String? { labels.first { $0.0 == key }?.1 }

    /// The value as a count: finite, not negative.
    var count: Double? { value.flatMap { $0.isFinite && $0 >= 0 ? $0 : nil } }

    /// The value as a share: finite, clamped to 0...1.
    var ratio: Double? { value.flatMap { $0.isFinite ? min(1, max(0, $0)) : nil } }

    private static func isNameByte(_ byte: UInt8) -> Bool {
        (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39) || byte == UInt8(ascii: "_")
            || byte == UInt8(ascii: ":")
    }
}
