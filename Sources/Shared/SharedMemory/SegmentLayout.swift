/// Byte layout of the shared-memory segment, version ``version``.
///
/// ```
/// 0      header     magic, version, header and total size, max workers, slot size (64 bytes)
/// 64     global     draining flag, restart total, worker gauge, supervisor pid, ...
/// 256    workers    maxWorkers slots of workerSlotSize bytes (pid, state, heartbeat,
///                   open connections, in-flight requests and prefill per upstream, ...)
/// ...    upstreams  maxUpstreams blocks of upstreamSize bytes (health, breaker, models)
/// ...    limits     two RateLimitTable regions (requests, tokens)
/// ...    metrics    maxWorkers areas of MetricsLayout.words counters
/// ...    prefixes   the PrefixIndex (version 4)
/// ...    responses  the ResponseOwners table (version 5)
///
/// Version 5 added the LoRA figures of an upstream block (``Upstream/loraSlots``) and the
/// response owners; version 6 the limits store's words to each metrics area; version 7 the
/// prompt blocks each worker has sent each upstream to prefill (``slotPrefillOffset``).
/// ```
/// Every field a process updates after start-up is a 64-bit word updated with atomics, so
/// a process killed at any instant leaves nothing locked and no word half-written. A
/// segment whose magic, version or size does not match is refused by workers.
public enum SegmentLayout {
    /// "LLMGWSEG" in ASCII.
    public static let magic: UInt64 = 0x4C4C_4D47_5753_4547
    /// Bumped on every incompatible layout change.
    public static let version: UInt32 = 7
    /// Worker slots in the segment: the `--workers` upper bound.
    public static let maxWorkers = 128

    static let headerSize = 64
    static let globalOffset = 64
    static let workerSlotsOffset = 256  // the global fields end before it
    /// Upstreams the segment tracks (configured upstreams are numbered in order).
    public static let maxUpstreams = 16
    /// Bytes per worker slot (a multiple of the cache line to avoid false sharing).
    static let workerSlotSize = 384
    /// Offset of a slot's in-flight counters (one UInt64 per upstream).
    static let slotInflightOffset = 128
    /// Offset of a slot's pending-prefill counters: prompt blocks sent to each upstream that
    /// it has not answered yet (one UInt64 per upstream; version 7).
    static let slotPrefillOffset = slotInflightOffset + maxUpstreams * 8
    static let upstreamsOffset = workerSlotsOffset + maxWorkers * workerSlotSize
    /// Bytes per upstream block: 128 bytes of atomics, then the models text.
    static let upstreamSize = 4096
    static let upstreamModelsOffset = 128
    /// Room for the served-models text (names joined by newlines).
    public static let upstreamModelsCapacity = upstreamSize - upstreamModelsOffset

    static let requestLimitsOffset = upstreamsOffset + maxUpstreams * upstreamSize
    static let tokenLimitsOffset = requestLimitsOffset + RateLimitTable.capacity * RateLimitTable.entrySize
    static let metricsOffset = tokenLimitsOffset + RateLimitTable.capacity * RateLimitTable.entrySize
    /// Bytes of one worker's metrics area, rounded up to whole pages.
    static let metricsAreaSize = (MetricsLayout.words * 8 + 4095) / 4096 * 4096

    static var prefixIndexOffset: Int { metricsOffset + maxWorkers * metricsAreaSize }
    static var responseOwnersOffset: Int { prefixIndexOffset + PrefixIndex.byteSize }

    /// A figure an upstream did not report.
    public static let unknown = UInt64.max

    /// Total bytes of the segment.
    public static var totalSize: Int { responseOwnersOffset + ResponseOwners.byteSize }

    // Header fields.
    static let magicOffset = 0
    static let versionOffset = 8  // UInt32 version, UInt32 header size
    static let totalSizeOffset = 16
    static let maxWorkersOffset = 24  // UInt32 max workers, UInt32 slot size

    // Global fields (offsets from globalOffset), all UInt64 atomics.
    enum Global: Int {
        case draining = 0
        // 8: reserved (a configuration generation once, written but never read); left
        // unused so the offsets after it, and ``SegmentLayout/version``, stay as they are.
        case workerRestartsTotal = 16
        case workersRunning = 24
        case supervisorPID = 32
        /// Bumped when a worker stops waiting for connections (see ``AcceptBalance``);
        /// workers that stepped out sleep on its low 32 bits (a futex). Version 2.
        case acceptEpoch = 40
        /// Workers sleeping on ``acceptEpoch`` (the bump wakes them only when there are any).
        case acceptSleepers = 48
        /// Wall-clock milliseconds when an API request last started or ended (version 3).
        case lastRequestMillis = 56
        /// One more than the highest worker slot ever used: metrics are summed over these
        /// slots only, not all ``maxWorkers`` (version 3).
        case slotsUsed = 64
        /// Round-robin routing's shared counter (version 4).
        case routingTicket = 72
    }

    // Worker slot fields (offsets from the slot's start), all UInt64 atomics.
    enum Slot: Int {
        case pid = 0
        case state = 8
        case heartbeat = 16
        case generation = 24
        /// Connections the worker holds open (version 2).
        case connections = 32
        /// API requests (key-checked routes) the worker is answering (version 3).
        case openRequests = 40
    }

    // Upstream block fields (offsets from the block's start), all UInt64 atomics.
    enum Upstream: Int {
        /// 0 never checked, 1 up, 2 down.
        case health = 0
        // 8: reserved (the time of the last check once, written but never read); left
        // unused so the offsets after it, and ``SegmentLayout/version``, stay as they are.
        /// Seqlock over the models text: odd while the supervisor writes it.
        case modelsSequence = 16
        /// Bytes of models text.
        case modelsLength = 24
        // 32: reserved (failed checks in a row once, written but never read), as above.
        /// The circuit breaker's packed state (see ``CircuitBreakerState``).
        case breaker = 40
        /// Prompt blocks recorded for this upstream in the ``PrefixIndex`` (its LRU clock;
        /// version 4).
        case prefixBlocks = 48
        /// How many ``PromptBlocks`` its prefix cache holds, from its `/metrics`
        /// (0 = not known; version 4).
        case cacheBlocks = 56
        /// The engine load the supervisor last read from its `/metrics` (version 4):
        /// requests waiting and running (``SegmentLayout/unknown`` when not reported), KV-cache
        /// use in millionths, and when it was read (monotonic microseconds; 0 = never),
        /// stored last.
        case engineWaiting = 64
        case engineRunning = 72
        case engineKVCacheMillionths = 80
        case engineReadAt = 88
        /// LoRA adapters from its `/metrics` (version 5), published with the engine load:
        /// `max_lora` in the high 32 bits and adapters running in the low 32
        /// (``SegmentLayout/unknown`` when it reports none), then the running adapters'
        /// names as a 128-bit ``AdapterFilter``.
        case loraSlots = 96
        case loraRunningLow = 104
        case loraRunningHigh = 112
        /// Requests its engine runs at once (vLLM's `max_num_seqs`, which `/metrics` does not
        /// state): the running count of the last scrape that found requests waiting, when its
        /// batch was full (0 = not seen yet; version 5).
        case engineBatchCapacity = 120
    }
}
