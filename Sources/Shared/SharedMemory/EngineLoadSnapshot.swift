import Atomics

/// The engine load of one upstream as the supervisor last read it from the upstream's
/// `/metrics` (vLLM's queue, running batch and KV-cache use), for the workers' routing and
/// the gateway's own metrics. Figures lag the engine by up to a scrape interval; the
/// workers' exact in-flight counts are the fast signal.
public struct EngineLoadSnapshot: Sendable, Equatable {
    public var waiting: UInt64?
    public var running: UInt64?
    /// 0 to 1.
    public var kvCacheUsage: Double?
    /// Its LoRA adapters (`vllm:lora_requests_info`); nil when it reports none.
    public var lora: LoRASlots?
    /// When it was read, monotonic microseconds (``MonotonicInstant``).
    public var readAtMicros: UInt64

    /// What an upstream says of its LoRA adapters.
    public struct LoRASlots: Sendable, Equatable {
        /// Adapters it can run at once (`max_lora`).
        public var maxAdapters: UInt32
        /// Adapters running now (with requests in its batch).
        public var runningCount: UInt32
        /// Their names.
        public var running: AdapterFilter

        public init(maxAdapters: UInt32, runningCount: UInt32, running: AdapterFilter) {
            self.maxAdapters = maxAdapters
            self.runningCount = runningCount
            self.running = running
        }

        /// Room for one more adapter.
        public var hasFreeSlot: Bool { runningCount < maxAdapters }
    }

    public init(waiting: UInt64?, running: UInt64?, kvCacheUsage: Double?, lora: LoRASlots? = nil, readAtMicros: UInt64) {
        self.waiting = waiting
        self.running = running
        self.kvCacheUsage = kvCacheUsage
        self.lora = lora
        self.readAtMicros = readAtMicros
    }

    /// Read within `maxAgeMicros` of `nowMicros`.
    public func isFresh(nowMicros: UInt64, maxAgeMicros: UInt64) -> Bool {
        readAtMicros != 0 && nowMicros &- readAtMicros <= maxAgeMicros
    }
}

extension UpstreamStatus {
    private func engineField(_ field: SegmentLayout.Upstream) -> UnsafeAtomic<UInt64> { segment.atomic(at: offset + field.rawValue) }

    /// Publishes a scrape (supervisor only): the figures first, the time last, so a reader
    /// that sees the new time sees the new figures.
    public func publishEngineLoad(_ load: EngineLoadSnapshot) {
        engineField(.engineWaiting).store(load.waiting ?? SegmentLayout.unknown, ordering: .relaxed)
        engineField(.engineRunning).store(load.running ?? SegmentLayout.unknown, ordering: .relaxed)
        let millionths = load.kvCacheUsage.map { UInt64((min(1, max(0, $0)) * 1_000_000).rounded()) }
        engineField(.engineKVCacheMillionths).store(millionths ?? SegmentLayout.unknown, ordering: .relaxed)
        let slots = load.lora.map { UInt64($0.maxAdapters) << 32 | UInt64($0.runningCount) }
        engineField(.loraSlots).store(slots ?? SegmentLayout.unknown, ordering: .relaxed)
        engineField(.loraRunningLow).store(load.lora?.running.low ?? 0, ordering: .relaxed)
        engineField(.loraRunningHigh).store(load.lora?.running.high ?? 0, ordering: .relaxed)
        engineField(.engineReadAt).store(load.readAtMicros, ordering: .releasing)
    }

    /// How many requests its engine runs at once, as last seen with a full batch (nil: never
    /// seen saturated). Kept across scrapes: it is a property of the engine, not its load.
    public var engineBatchCapacity: UInt64? {
        get {
            let value = engineField(.engineBatchCapacity).load(ordering: .relaxed)
            return value == 0 ? nil : value
        }
        nonmutating set { engineField(.engineBatchCapacity).store(newValue ?? 0, ordering: .relaxed) }
    }

    /// The last scrape published; nil when none was.
    public var engineLoad: EngineLoadSnapshot? {
        let readAt = engineField(.engineReadAt).load(ordering: .acquiring)
        guard readAt != 0 else { return nil }
        func figure(_ field: SegmentLayout.Upstream) -> UInt64? {
            let value = engineField(field).load(ordering: .relaxed)
            return value == SegmentLayout.unknown ? nil : value
        }
        let lora = figure(.loraSlots).map { slots in
            EngineLoadSnapshot.LoRASlots(
                maxAdapters: UInt32(truncatingIfNeeded: slots >> 32), runningCount: UInt32(truncatingIfNeeded: slots),
                running: AdapterFilter(
                    low: engineField(.loraRunningLow).load(ordering: .relaxed), high: engineField(.loraRunningHigh).load(ordering: .relaxed)))
        }
        return EngineLoadSnapshot(
            waiting: figure(.engineWaiting), running: figure(.engineRunning),
            kvCacheUsage: figure(.engineKVCacheMillionths).map { Double($0) / 1_000_000 }, lora: lora, readAtMicros: readAt)
    }
}
