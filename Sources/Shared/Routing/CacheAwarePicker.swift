/// The tunables of ``CacheAwarePicker`` (defaults chosen on `benchmarks/routing`).
public struct CacheAwareTuning: Sendable, Equatable {
    /// How many uncached prompt blocks (``PromptBlocks``, ~64 tokens each) of prefill cost as
    /// much as one more request in flight on the upstream: the exchange rate between cache
    /// affinity and load while the engine batches everything it is sent (a running request
    /// slows the batch a little, and a replica that fills up sooner queues sooner). 32, 96,
    /// 128, 160, 256 and 512 tokens tried on `benchmarks/routing`: 96 and 128 had the lowest
    /// mean time to first token, 128 and above lost cache hits with every batch place taken.
    public var blocksPerRunningRequest: Double = 1.5
    /// The same for one request waiting in the engine's queue (its `/metrics`): the engine is
    /// saturated, and a new request waits for a whole one to finish.
    public var blocksPerWaitingRequest: Double = 4
    /// What one prompt block another request sent the upstream, still to be prefilled,
    /// costs a request sent there now: the engine prefills it in the same steps, before or
    /// alongside this one's first token. Half a block: the engine interleaves decoding and
    /// other prompts' chunks with it (0, 0.5, 1 and 2 tried on `benchmarks/routing`: 0.5
    /// had the lowest mean and p90 time to first token, 1 and above lost cache hits).
    public var blocksPerPendingBlock: Double = 0.5
    /// A cold prompt (or a session) goes to its hashed upstream unless that one has more than
    /// this many requests more than the least loaded.
    public var coldSlack: UInt64 = 1
    /// Engine figures older than this (microseconds) are not used: routing goes by the
    /// workers' own in-flight counts alone.
    public var engineMaxAgeMicros: UInt64 = 5_000_000

    public init() {}

    /// The tuning `configuration` sets (`ROUTING_*`).
    public init(_ server: GatewayConfiguration.Server) {
        let tokensPerBlock = Double(PromptBlocks.tokensPerBlock)
        blocksPerRunningRequest = Double(server.routingRunningRequestTokens) / tokensPerBlock
        blocksPerWaitingRequest = Double(server.routingWaitingRequestTokens) / tokensPerBlock
        coldSlack = UInt64(server.routingColdSlack)
    }
}

/// `routing: cache_aware`, as a pure function. Each well candidate costs the prefill of the
/// prompt blocks it does not hold plus its load in the same unit: its requests in flight at
/// ``CacheAwareTuning/blocksPerRunningRequest`` blocks each, those waiting in its engine's
/// queue at ``CacheAwareTuning/blocksPerWaitingRequest``, and the prompt blocks sent to it
/// that it has not answered yet at ``CacheAwareTuning/blocksPerPendingBlock``. A warm upstream keeps a
/// conversation until its load costs more than recomputing the prefix elsewhere (sticky
/// until saturated). A prompt cached nowhere, and a request with a
/// session id, go to the upstream their key hashes to (rendezvous hashing: independent
/// gateways and workers agree, and only 1/n of the keys move when an upstream comes or goes)
/// unless it is more than ``CacheAwareTuning/coldSlack`` requests busier than the least
/// loaded. For a LoRA adapter all this happens among the upstreams running it, else
/// among those with a free adapter slot; the rest follow. Unwell upstreams come last,
/// least loaded first: tried only when all else fails.
public struct CacheAwarePicker: UpstreamPicker {
    public var tuning: CacheAwareTuning

    public init(tuning: CacheAwareTuning = CacheAwareTuning()) { self.tuning = tuning }

    public var needsPromptMatch: Bool { true }

    public func decide(_ request: RoutingRequest) -> RoutingDecision {
        // Runs on every routed request: plain loops over the candidates, and one array (the
        // order) allocated.
        let candidates = request.candidates
        let promptBlocks = request.promptBlocks
        let session = request.sessionKey != nil
        let affinityKey = request.sessionKey ?? request.firstBlock
        let adapterTier = candidates.bestAdapterTier
        func kept(_ c: RoutingCandidate) -> Bool { c.isWell && (adapterTier == nil || c.adapter == adapterTier) }
        func cost(_ c: RoutingCandidate) -> Double {
            Double(max(0, promptBlocks - c.matchedBlocks)) + Double(c.inflight) * tuning.blocksPerRunningRequest
                + Double(c.engineWaiting) * tuning.blocksPerWaitingRequest + Double(c.pendingPrefillBlocks) * tuning.blocksPerPendingBlock
        }
        var cheapest: RoutingCandidate?
        var leastQueue = UInt64.max
        var bestMatch = 0
        for c in candidates where kept(c) {
            leastQueue = min(leastQueue, c.queue)
            bestMatch = max(bestMatch, c.matchedBlocks)
            if let best = cheapest, (cost(best), best.queue, best.index) <= (cost(c), c.queue, c.index) { continue }
            cheapest = c
        }
        guard var first = cheapest else {
            return RoutingDecision(order: candidates.order { ($0.queue, $0.index) < ($1.queue, $1.index) }, reason: .load)
        }
        var reason: RoutingReason = first.matchedBlocks > 0 && first.matchedBlocks == bestMatch ? .prefix : .load
        if let key = affinityKey, session || bestMatch == 0 {
            var hashed = first
            var score = UInt64.min
            for c in candidates where kept(c) && Self.rendezvous(key, c.index) > score {
                (hashed, score) = (c, Self.rendezvous(key, c.index))
            }
            // A session stays on its upstream, and a prompt cached nowhere goes to its hashed
            // upstream, unless that one is saturated compared with the least loaded.
            if hashed.queue <= leastQueue &+ tuning.coldSlack {
                first = hashed
                reason = session ? .session : .cold
            }
        }
        if adapterTier != nil { reason = .lora }
        // The chosen one, the others kept by cost, those LoRA preference left out by cost, the
        // unwell by load.
        func rank(_ c: RoutingCandidate) -> (Int, Double, UInt64, Int) {
            let group = c.index == first.index ? 0 : kept(c) ? 1 : c.isWell ? 2 : 3
            return (group, group == 3 ? 0 : cost(c), c.queue, c.index)
        }
        let order = candidates.order { rank($0) < rank($1) }
        return RoutingDecision(
            order: order, reason: reason, matchedShare: promptBlocks > 0 ? Double(first.matchedBlocks) / Double(promptBlocks) : nil,
            promptBlocks: promptBlocks, uncachedBlocks: max(0, promptBlocks - first.matchedBlocks))
    }

    /// The rendezvous (highest random weight) score of upstream `index` for `key`.
    static func rendezvous(_ key: UInt64, _ index: Int) -> UInt64 {
        PromptBlocks.mix(key ^ (UInt64(index) &+ 1) &* 0x9E37_79B9_7F4A_7C15)
    }
}
