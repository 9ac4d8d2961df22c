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
    /// When it was read, monotonic microseconds (``MonotonicInstant``).
    public var readAtMicros: UInt64

    public init(waiting: UInt64?, running: UInt64?, kvCacheUsage: Double?, readAtMicros: UInt64) {
        self.waiting = waiting
        self.running = running
        self.kvCacheUsage = kvCacheUsage
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
        engineField(.engineReadAt).store(load.readAtMicros, ordering: .releasing)
    }

    /// The last scrape published; nil when none was.
    public var engineLoad: EngineLoadSnapshot? {
        let readAt = engineField(.engineReadAt).load(ordering: .acquiring)
        guard readAt != 0 else { return nil }
        func figure(_ field: SegmentLayout.Upstream) -> UInt64? {
            let value = engineField(field).load(ordering: .relaxed)
            return value == SegmentLayout.unknown ? nil : value
        }
        return EngineLoadSnapshot(
            waiting: figure(.engineWaiting), running: figure(.engineRunning),
            kvCacheUsage: figure(.engineKVCacheMillionths).map { Double($0) / 1_000_000 }, readAtMicros: readAt)
    }
}
