import Atomics
import CGatewayShims

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// The POSIX shared-memory segment every gateway process maps: created by the supervisor
/// (an anonymous `memfd`, so a crash leaves nothing behind in /dev/shm) and inherited by
/// each worker as a file descriptor.
///
/// All access after start-up goes through 64-bit atomics (`UnsafeAtomic(at:)` on the
/// mapping), so no process can leave a lock held for the others.
public final class SharedSegment: @unchecked Sendable {
    /// The descriptor backing the mapping (handed to workers).
    public let fileDescriptor: Int32
    /// Start of the mapping.
    let base: UnsafeMutableRawPointer
    /// Length of the mapping.
    public let size: Int

    private init(fileDescriptor: Int32, base: UnsafeMutableRawPointer, size: Int) {
        self.fileDescriptor = fileDescriptor
        self.base = base
        self.size = size
    }

    deinit {
        munmap(base, size)
        close(fileDescriptor)
    }

    /// Creates a zeroed segment with a fresh header.
    public static func create(supervisorPID: Int32 = getpid()) throws -> SharedSegment {
        let fd = gw_memfd_create("llm-gateway-state")
        guard fd >= 0 else { throw SegmentError.system("memfd_create", errno) }
        let size = SegmentLayout.totalSize
        guard ftruncate(fd, off_t(size)) == 0 else {
            let e = errno
            close(fd)
            throw SegmentError.system("ftruncate", e)
        }
        let segment = try map(fd: fd, size: size)
        segment.rawStore(SegmentLayout.magic, at: SegmentLayout.magicOffset)
        segment.rawStore(UInt64(SegmentLayout.version) | UInt64(SegmentLayout.headerSize) << 32, at: SegmentLayout.versionOffset)
        segment.rawStore(UInt64(size), at: SegmentLayout.totalSizeOffset)
        segment.rawStore(
            UInt64(SegmentLayout.maxWorkers) | UInt64(SegmentLayout.workerSlotSize) << 32,
            at: SegmentLayout.maxWorkersOffset
        )
        segment.global(.supervisorPID).store(UInt64(supervisorPID), ordering: .releasing)
        return segment
    }

    /// Maps a segment inherited from the supervisor and checks its header.
    public static func attach(fileDescriptor fd: Int32) throws -> SharedSegment {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SegmentError.system("fstat", errno) }
        let size = Int(st.st_size)
        guard size >= SegmentLayout.headerSize else { throw SegmentError.incompatible("segment is \(size) bytes") }
        let segment = try map(fd: fd, size: size)
        let magic = segment.rawLoad(at: SegmentLayout.magicOffset)
        let version = UInt32(truncatingIfNeeded: segment.rawLoad(at: SegmentLayout.versionOffset))
        let total = segment.rawLoad(at: SegmentLayout.totalSizeOffset)
        guard magic == SegmentLayout.magic else { throw SegmentError.incompatible("bad magic") }
        guard version == SegmentLayout.version, total == UInt64(SegmentLayout.totalSize), size == SegmentLayout.totalSize else {
            throw SegmentError.incompatible(
                "segment version \(version) of \(total) bytes, this binary expects version \(SegmentLayout.version) of \(SegmentLayout.totalSize) bytes (supervisor and worker binaries differ?)"
            )
        }
        return segment
    }

    private static func map(fd: Int32, size: Int) throws -> SharedSegment {
        let pointer = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let pointer, pointer != MAP_FAILED else { throw SegmentError.system("mmap", errno) }
        return SharedSegment(fileDescriptor: fd, base: pointer, size: size)
    }

    /// The 64-bit atomic word at `offset` (8-byte aligned).
    @inline(__always)
    func atomic(at offset: Int) -> UnsafeAtomic<UInt64> {
        precondition(offset >= 0 && offset + 8 <= size && offset % 8 == 0, "segment offset out of range")
        return UnsafeAtomic(at: (base + offset).assumingMemoryBound(to: UInt64.AtomicRepresentation.self))
    }

    private func rawStore(_ value: UInt64, at offset: Int) { atomic(at: offset).store(value, ordering: .releasing) }
    private func rawLoad(at offset: Int) -> UInt64 { atomic(at: offset).load(ordering: .acquiring) }

    func global(_ field: SegmentLayout.Global) -> UnsafeAtomic<UInt64> {
        atomic(at: SegmentLayout.globalOffset + field.rawValue)
    }

    /// True once the supervisor began a graceful drain (`/ready` answers 503).
    public var isDraining: Bool {
        get { global(.draining).load(ordering: .acquiring) != 0 }
        set { global(.draining).store(newValue ? 1 : 0, ordering: .releasing) }
    }

    /// Workers replaced after dying (monotonic over the supervisor's life).
    public var workerRestartsTotal: UInt64 { global(.workerRestartsTotal).load(ordering: .relaxed) }

    /// Counts one replaced worker.
    public func recordWorkerRestart() { global(.workerRestartsTotal).wrappingIncrement(ordering: .relaxed) }

    /// Worker processes currently alive, as the supervisor counts them.
    public var workersRunning: UInt64 {
        get { global(.workersRunning).load(ordering: .relaxed) }
        set { global(.workersRunning).store(newValue, ordering: .relaxed) }
    }

    /// Wall-clock milliseconds since the epoch when an API request last started or ended
    /// (0 = none yet): `llm_gateway_last_request_timestamp_seconds` and `/idle`.
    public var lastRequestMillis: UInt64 { global(.lastRequestMillis).load(ordering: .relaxed) }

    /// Records API activity at `millis` (the latest of all workers' wins).
    public func noteRequest(atMillis millis: UInt64) {
        let word = global(.lastRequestMillis)
        var current = word.load(ordering: .relaxed)
        while current < millis {
            let (exchanged, original) = word.compareExchange(expected: current, desired: millis, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }

    /// One more than the highest worker slot ever used (metrics are summed over these).
    public var slotsUsed: Int { Int(min(global(.slotsUsed).load(ordering: .acquiring), UInt64(SegmentLayout.maxWorkers))) }

    /// Counts `slot` as used (before a worker in it records anything).
    public func noteSlotUsed(_ slot: Int) {
        let word = global(.slotsUsed)
        let wanted = UInt64(slot + 1)
        var current = word.load(ordering: .relaxed)
        while current < wanted {
            let (exchanged, original) = word.compareExchange(expected: current, desired: wanted, ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = original
        }
    }

    /// API requests open in every worker (streams until their last byte).
    public var openRequests: UInt64 {
        var total: UInt64 = 0
        for slot in 0..<SegmentLayout.maxWorkers { total &+= workerSlot(slot).openRequests }
        return total
    }

    /// The worker slot at `index` (0..<maxWorkers).
    public func workerSlot(_ index: Int) -> WorkerSlot {
        precondition((0..<SegmentLayout.maxWorkers).contains(index), "worker slot \(index) out of range")
        return WorkerSlot(segment: self, offset: SegmentLayout.workerSlotsOffset + index * SegmentLayout.workerSlotSize)
    }
}

/// Why a segment could not be created or attached.
public enum SegmentError: Error, CustomStringConvertible {
    case system(String, Int32)
    case incompatible(String)

    public var description: String {
        switch self {
        case .system(let call, let code): "\(call) failed: \(String(cString: strerror(code)))"
        case .incompatible(let why): "incompatible shared-memory segment: \(why)"
        }
    }
}
