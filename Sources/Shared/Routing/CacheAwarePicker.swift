/// The tunables of ``CacheAwarePicker`` (defaults chosen on `benchmarks/routing`).
public struct CacheAwareTuning: Sendable, Equatable {
    /// How many uncached prompt blocks (``PromptBlocks``, ~64 tokens each) of prefill cost as
    /// much as one more request in flight on the upstream: the exchange rate between cache
    /// affinity and load while the engine batches everything it is sent (a running request
    /// slows the batch a little).
    public var blocksPerRunningRequest: Double = 0.5
    /// The same for one request waiting in the engine's queue (its `/metrics`): the engine is
    /// saturated, and a new request waits for a whole one to finish.
    public var blocksPerWaitingRequest: Double = 4
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
/// queue at ``CacheAwareTuning/blocksPerWaitingRequest``. A warm upstream keeps a
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
        let candidates = request.candidates
        let promptBlocks = request.promptBlocks
        let session = request.sessionKey != nil
        let affinityKey = request.sessionKey ?? request.firstBlock
        let (well, narrowed) = candidates.filter(\.isWell).preferringAdapter()
        let unwell = candidates.filter { !$0.isWell }.sorted { ($0.queue, $0.index) < ($1.queue, $1.index) }.map(\.index)
        guard !well.isEmpty else { return RoutingDecision(order: unwell, reason: .load) }
        func cost(_ c: RoutingCandidate) -> Double {
            Double(max(0, promptBlocks - c.matchedBlocks)) + Double(c.inflight) * tuning.blocksPerRunningRequest
                + Double(c.engineWaiting) * tuning.blocksPerWaitingRequest
        }
        func share(_ c: RoutingCandidate) -> Double? { promptBlocks > 0 ? Double(c.matchedBlocks) / Double(promptBlocks) : nil }
        let byCost = well.sorted { (cost($0), $0.queue, $0.index) < (cost($1), $1.queue, $1.index) }
        let leastQueue = well.map(\.queue).min() ?? 0
        let bestMatch = well.map(\.matchedBlocks).max() ?? 0
        var first = byCost[0]
        var reason: RoutingReason = first.matchedBlocks > 0 && first.matchedBlocks == bestMatch ? .prefix : .load
        if let key = affinityKey, session || bestMatch == 0 {
            let hashed = well.max { Self.rendezvous(key, $0.index) < Self.rendezvous(key, $1.index) }!
            // A session stays on its upstream, and a prompt cached nowhere goes to its hashed
            // upstream, unless that one is saturated compared with the least loaded.
            if hashed.queue <= leastQueue &+ tuning.coldSlack {
                first = hashed
                reason = session ? .session : .cold
            }
        }
        // Well upstreams LoRA preference left out come after those it kept.
        let leftOut =
            narrowed
            ? candidates.filter { c in c.isWell && !well.contains { $0.index == c.index } }.sorted {
                (cost($0), $0.queue, $0.index) < (cost($1), $1.queue, $1.index)
            }.map(\.index) : []
        let order = [first.index] + byCost.filter { $0.index != first.index }.map(\.index) + leftOut + unwell
        return RoutingDecision(order: order, reason: narrowed ? .lora : reason, matchedShare: share(first))
    }

    /// The rendezvous (highest random weight) score of upstream `index` for `key`.
    static func rendezvous(_ key: UInt64, _ index: Int) -> UInt64 {
        PromptBlocks.mix(key ^ (UInt64(index) &+ 1) &* 0x9E37_79B9_7F4A_7C15)
    }
}
