/// What routing knows of one candidate upstream for one request.
public struct RoutingCandidate: Sendable, Equatable {
    public var index: Int
    /// Up by its last health check and its breaker closed.
    public var isWell: Bool
    /// Requests in flight to it from every worker of this gateway (exact, immediate).
    public var inflight: UInt64
    /// How many places of its engine's queue count against it, the larger of: the requests
    /// waiting there by its `/metrics` when fresh (other gateways' and clients' too, but up
    /// to a scrape old), and, once its batch capacity is known, the requests of this
    /// gateway that would wait there with one more sent now (immediate; 1 at exactly the
    /// capacity: the batch is full).
    public var engineWaiting: UInt64
    /// Prompt blocks this gateway sent it that it has not started answering (exact,
    /// immediate): the prefill a request sent now waits behind.
    public var pendingPrefillBlocks: UInt64
    /// Leading blocks of the prompt it holds (``PrefixIndex``).
    public var matchedBlocks: Int
    /// How it stands with the request's model when that is a LoRA adapter.
    public var adapter: AdapterFit

    /// Where a LoRA adapter would run, best first.
    public enum AdapterFit: Int, Sendable, Comparable {
        /// Its engine runs the adapter now (no load, no swap).
        case running
        /// Its engine has a free adapter slot.
        case freeSlot
        /// Every slot is taken: the request waits for one.
        case full
        /// The model is not an adapter of this upstream, or the upstream does not say
        /// (no fresh `vllm:lora_requests_info`).
        case notAdapter

        public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    }

    public init(
        index: Int, isWell: Bool, inflight: UInt64, engineWaiting: UInt64 = 0, pendingPrefillBlocks: UInt64 = 0, matchedBlocks: Int = 0,
        adapter: AdapterFit = .notAdapter
    ) {
        self.pendingPrefillBlocks = pendingPrefillBlocks
        self.index = index
        self.isWell = isWell
        self.inflight = inflight
        self.engineWaiting = engineWaiting
        self.matchedBlocks = matchedBlocks
        self.adapter = adapter
    }

    var queue: UInt64 { inflight &+ engineWaiting }
}

extension Array<RoutingCandidate> {
    /// LoRA preference: the adapter tier the well candidates are narrowed to (running it,
    /// else a free slot), or nil when it leaves none of them out.
    var bestAdapterTier: RoutingCandidate.AdapterFit? {
        var best = RoutingCandidate.AdapterFit.notAdapter
        var worst = RoutingCandidate.AdapterFit.running
        for c in self where c.isWell {
            best = Swift.min(best, c.adapter)
            worst = Swift.max(worst, c.adapter)
        }
        return best < .full && worst != best ? best : nil
    }

    /// The candidates' indices in the order `areInIncreasingOrder` gives, ties in their
    /// order here (a stable insertion sort: a handful of candidates, one array allocated).
    func order(by areInIncreasingOrder: (RoutingCandidate, RoutingCandidate) -> Bool) -> [Int] {
        var positions = [Int](repeating: 0, count: count)
        for next in 1..<Swift.max(1, count) {
            var slot = next
            while slot > 0 && areInIncreasingOrder(self[next], self[positions[slot - 1]]) {
                positions[slot] = positions[slot - 1]
                slot -= 1
            }
            positions[slot] = next
        }
        for slot in positions.indices { positions[slot] = self[positions[slot]].index }
        return positions
    }
}
