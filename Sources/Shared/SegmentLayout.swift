/// Byte layout of the shared-memory segment, version ``version``.
///
/// ```
/// 0      header     magic, version, sizes, region offsets (64 bytes)
/// 64     global     draining flag, config generation, restart total, worker gauge
/// 256    workers    maxWorkers slots of slotSize bytes (pid, state, heartbeat, ...)
/// ```
/// Every field a process updates after start-up is a 64-bit word updated with atomics, so
/// a process killed at any instant leaves nothing locked and no word half-written. A
/// segment whose magic, version or size does not match is refused by workers.
public enum SegmentLayout {
    /// "LLMGWSEG" in ASCII.
    public static let magic: UInt64 = 0x4C4C_4D47_5753_4547
    /// Bumped on every incompatible layout change.
    public static let version: UInt32 = 1
    /// Worker slots in the segment: the `--workers` upper bound.
    public static let maxWorkers = 128

    static let headerSize = 64
    static let globalOffset = 64
    static let workerSlotsOffset = 256
    /// Bytes per worker slot (a multiple of the cache line to avoid false sharing).
    static let workerSlotSize = 128

    /// Total bytes of the segment.
    public static var totalSize: Int { workerSlotsOffset + maxWorkers * workerSlotSize }

    // Header fields.
    static let magicOffset = 0
    static let versionOffset = 8  // UInt32 version, UInt32 header size
    static let totalSizeOffset = 16
    static let maxWorkersOffset = 24  // UInt32 max workers, UInt32 slot size

    // Global fields (offsets from globalOffset), all UInt64 atomics.
    enum Global: Int {
        case draining = 0
        case configGeneration = 8
        case workerRestartsTotal = 16
        case workersRunning = 24
        case supervisorPID = 32
    }

    // Worker slot fields (offsets from the slot's start), all UInt64 atomics.
    enum Slot: Int {
        case pid = 0
        case state = 8
        case heartbeat = 16
        case generation = 24
        case requestsServed = 32
        case openConnections = 40
    }
}
