import Atomics

/// One worker's slot in the shared segment: who it is, where it is in its life, and the
/// heartbeat its event loop writes so the supervisor can tell a stalled worker from a busy one.
public struct WorkerSlot: Sendable {
    /// Where a worker is in its life, as it reports itself.
    public enum State: UInt64, Sendable {
        /// Not in use.
        case empty = 0
        /// Spawned, not yet accepting.
        case booting = 1
        /// Accepting connections on the shared socket.
        case ready = 2
        /// Stopped accepting; finishing in-flight requests.
        case draining = 3
    }

    let segment: SharedSegment
    let offset: Int

    /// The slot's number (0..<maxWorkers).
    public var index: Int { (offset - SegmentLayout.workerSlotsOffset) / SegmentLayout.workerSlotSize }

    private func field(_ f: SegmentLayout.Slot) -> UnsafeAtomic<UInt64> { segment.atomic(at: offset + f.rawValue) }

    /// The worker's pid (0 when the slot is free).
    public var pid: Int32 {
        get { Int32(truncatingIfNeeded: field(.pid).load(ordering: .acquiring)) }
        nonmutating set { field(.pid).store(UInt64(UInt32(bitPattern: newValue)), ordering: .releasing) }
    }

    /// The state the worker last reported.
    public var state: State {
        get { State(rawValue: field(.state).load(ordering: .acquiring)) ?? .empty }
        nonmutating set { field(.state).store(newValue.rawValue, ordering: .releasing) }
    }

    /// The last time the worker's event loop ran its heartbeat task.
    public var heartbeat: MonotonicInstant {
        get { MonotonicInstant(nanoseconds: field(.heartbeat).load(ordering: .relaxed)) }
        nonmutating set { field(.heartbeat).store(newValue.nanoseconds, ordering: .relaxed) }
    }

    /// The configuration generation the worker runs.
    public var generation: UInt64 {
        get { field(.generation).load(ordering: .relaxed) }
        nonmutating set { field(.generation).store(newValue, ordering: .relaxed) }
    }

    /// Connections the worker holds open (what ``AcceptBalance`` compares).
    public var connections: UInt64 { field(.connections).load(ordering: .relaxed) }

    /// Counts a connection the worker accepted (paired with ``connectionClosed()``).
    public func connectionOpened() { field(.connections).wrappingIncrement(ordering: .relaxed) }
    public func connectionClosed() { field(.connections).wrappingDecrement(ordering: .relaxed) }

    /// API requests (routes that take a key) the worker is answering: streams count until
    /// their last byte. What `/idle` counts as activity.
    public var openRequests: UInt64 { field(.openRequests).load(ordering: .relaxed) }

    /// An API request began (paired with ``apiRequestEnded()``).
    public func apiRequestStarted() { field(.openRequests).wrappingIncrement(ordering: .relaxed) }
    public func apiRequestEnded() { field(.openRequests).wrappingDecrement(ordering: .relaxed) }

    private func inflight(_ upstream: Int) -> UnsafeAtomic<UInt64> {
        precondition((0..<SegmentLayout.maxUpstreams).contains(upstream), "upstream index out of range")
        return segment.atomic(at: offset + SegmentLayout.slotInflightOffset + upstream * 8)
    }

    /// Requests this worker has in flight to `upstream`.
    public func inflightRequests(upstream: Int) -> UInt64 { inflight(upstream).load(ordering: .relaxed) }

    /// Counts a request to `upstream` starting (paired with ``requestEnded(upstream:)``).
    public func requestStarted(upstream: Int) { inflight(upstream).wrappingIncrement(ordering: .relaxed) }
    public func requestEnded(upstream: Int) { inflight(upstream).wrappingDecrement(ordering: .relaxed) }

    private func prefill(_ upstream: Int) -> UnsafeAtomic<UInt64> {
        precondition((0..<SegmentLayout.maxUpstreams).contains(upstream), "upstream index out of range")
        return segment.atomic(at: offset + SegmentLayout.slotPrefillOffset + upstream * 8)
    }

    /// Prompt blocks of streamed requests this worker sent `upstream` that it has not started
    /// answering: the prefill ahead of a request sent there now.
    public func pendingPrefillBlocks(upstream: Int) -> UInt64 { prefill(upstream).load(ordering: .relaxed) }

    /// Counts `blocks` of prompt to prefill on `upstream` (paired with ``prefillEnded(upstream:blocks:)``
    /// when its answer starts, or the attempt ends).
    public func prefillStarted(upstream: Int, blocks: UInt64) { prefill(upstream).wrappingIncrement(by: blocks, ordering: .relaxed) }
    public func prefillEnded(upstream: Int, blocks: UInt64) { prefill(upstream).wrappingDecrement(by: blocks, ordering: .relaxed) }

    /// Prepares the slot for a new worker (called by the supervisor before spawning). The
    /// in-flight, prefill and connection counters of a worker that died are dropped with it, so nothing it held
    /// skews balancing afterwards.
    public func reset(generation: UInt64, now: MonotonicInstant) {
        segment.noteSlotUsed(index)
        for upstream in 0..<SegmentLayout.maxUpstreams {
            inflight(upstream).store(0, ordering: .relaxed)
            prefill(upstream).store(0, ordering: .relaxed)
        }
        field(.connections).store(0, ordering: .relaxed)
        field(.openRequests).store(0, ordering: .relaxed)
        self.heartbeat = now
        self.generation = generation
        self.state = .booting
        self.pid = 0
    }

    /// Marks the slot free (after the worker was reaped).
    public func release() {
        for upstream in 0..<SegmentLayout.maxUpstreams {
            inflight(upstream).store(0, ordering: .relaxed)
            prefill(upstream).store(0, ordering: .relaxed)
        }
        field(.connections).store(0, ordering: .relaxed)
        field(.openRequests).store(0, ordering: .relaxed)
        self.state = .empty
        self.pid = 0
    }
}
