import Atomics
import CGatewayShims

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// Least-connections placement of new connections over the workers that share the
/// listening socket.
///
/// Workers wait for connections with `EPOLLEXCLUSIVE`, so the kernel hands each new
/// connection to one waiting worker, and a worker that is not waiting gets none. A worker
/// waits only while it holds at most ``slack`` more connections than the accepting worker
/// that holds the fewest; one further ahead steps out and sleeps on the segment's accept
/// epoch until that changes (or ``stepOutTimeout`` passes). The worker with the fewest never
/// steps out; a worker that stops waiting for another reason — it stepped out after an
/// accept, it drains, it died — bumps the epoch, so the sleepers look again and one of them
/// takes over.
public struct AcceptBalance: Sendable {
    /// How many connections a worker may hold above the fewest and still wait.
    public static let slack: UInt64 = 1
    /// Another worker counts only while its event loop's heartbeat (written every 250 ms)
    /// is this recent: a worker whose loop hangs is not deferred to for longer than this.
    public static let heartbeatFreshness = 1.0
    /// A worker that stepped out looks again after this long even without a bump (a worker
    /// that hung instead of stopping bumps nothing).
    public static let stepOutTimeout = 0.25

    let segment: SharedSegment
    let slot: Int

    public init(segment: SharedSegment, slot: Int) {
        self.segment = segment
        self.slot = slot
    }

    /// Whether a worker holding `mine` connections waits for the next one, given the fewest
    /// held by another accepting worker (nil: no other worker is accepting).
    public static func mayWait(mine: UInt64, fewestElsewhere: UInt64?) -> Bool {
        guard let fewest = fewestElsewhere else { return true }
        return mine <= fewest &+ slack
    }

    /// Whether this worker waits for the next connection now.
    public func mayWait(now: MonotonicInstant = .now()) -> Bool {
        Self.mayWait(mine: segment.workerSlot(slot).connections, fewestElsewhere: segment.fewestConnections(excluding: slot, now: now))
    }

    /// The accept epoch now (read before deciding to step out, passed to ``stepOut(seen:)``).
    public var epoch: UInt32 { UInt32(truncatingIfNeeded: segment.global(.acceptEpoch).load(ordering: .sequentiallyConsistent)) }

    /// Sleeps until the accept epoch differs from `seen` (at once if it already does), at
    /// most `timeout` seconds.
    public func stepOut(seen: UInt32, timeout: Double = stepOutTimeout) {
        let sleepers = segment.global(.acceptSleepers)
        sleepers.wrappingIncrement(ordering: .sequentiallyConsistent)
        _ = gw_futex_wait(segment.acceptEpochWord, seen, Int64(timeout * 1e9))
        sleepers.wrappingDecrement(ordering: .sequentiallyConsistent)
    }

    /// Tells the workers that stepped out to look again (this one stopped waiting).
    public func bump() { segment.bumpAcceptEpoch() }

    /// Workers sleeping in ``stepOut(seen:timeout:)`` now.
    public var sleepers: UInt64 { segment.global(.acceptSleepers).load(ordering: .sequentiallyConsistent) }
}

extension SharedSegment {
    /// The fewest connections held by a worker other than slot `excluded` that is accepting:
    /// its state is `ready` and its heartbeat no older than
    /// ``AcceptBalance/heartbeatFreshness``. Nil when there is none.
    public func fewestConnections(excluding excluded: Int, now: MonotonicInstant) -> UInt64? {
        let oldest = now.adding(seconds: -AcceptBalance.heartbeatFreshness)
        var fewest: UInt64?
        for index in 0..<SegmentLayout.maxWorkers where index != excluded {
            let slot = workerSlot(index)
            guard slot.state == .ready, slot.heartbeat >= oldest else { continue }
            let held = slot.connections
            if fewest == nil || held < fewest! { fewest = held }
        }
        return fewest
    }

    /// The futex word of the accept epoch: the low half of its 64-bit field.
    var acceptEpochWord: UnsafeMutablePointer<UInt32> {
        #if _endian(little)
            let lowHalf = 0
        #else
            let lowHalf = 4
        #endif
        return (base + SegmentLayout.globalOffset + SegmentLayout.Global.acceptEpoch.rawValue + lowHalf).assumingMemoryBound(to: UInt32.self)
    }

    /// Bumps the accept epoch and wakes the workers sleeping on it, if any (a worker stopped
    /// waiting for connections: it stepped out, drains or died).
    public func bumpAcceptEpoch() {
        global(.acceptEpoch).wrappingIncrement(ordering: .sequentiallyConsistent)
        if global(.acceptSleepers).load(ordering: .sequentiallyConsistent) > 0 { _ = gw_futex_wake_all(acceptEpochWord) }
    }
}
