/// Orders the upstreams of one model for one request: the seam routing plugs into. The
/// exchange then tries them in that order (an open breaker is still skipped at the attempt,
/// and fallback models follow), so a picker only ranks, and must return every candidate.
///
/// A picker is a pure function of the ``RoutingRequest``: the candidates as every worker
/// sees them in the segment (health, in-flight requests, engine queue, cached prefix), the
/// prompt's blocks and session, and a shared ticket.
public protocol UpstreamPicker: Sendable {
    /// Whether ``RoutingRequest/promptBlocks`` and the candidates' matched blocks are used
    /// (cutting and matching the prompt costs CPU: skipped when not).
    var needsPromptMatch: Bool { get }
    func decide(_ request: RoutingRequest) -> RoutingDecision
}

extension RoutingPolicy {
    /// The picker of this policy.
    public func picker(tuning: CacheAwareTuning = CacheAwareTuning()) -> any UpstreamPicker {
        switch self {
        case .cacheAware: CacheAwarePicker(tuning: tuning)
        case .leastLoaded: LeastLoadedPicker()
        case .roundRobin: RoundRobinPicker()
        }
    }
}

extension UpstreamStatus {
    /// Not down by its last health check, and its breaker closed: routing's first choices.
    public var isWell: Bool { health != .down && breaker.phase == .closed }
}

extension SharedSegment {
    /// Upstream `index` as routing sees it for a request of `model` (the name the upstream
    /// knows it by), its matched blocks left at 0; engine figures older than
    /// `engineMaxAgeMicros` are not used. Its engine's queue is the larger of the scraped one
    /// and this gateway's requests in flight, with one more, beyond the engine's batch
    /// capacity. (The scraped count is not raised by one: a scrape that lands between two
    /// engine steps often sees a request about to be admitted, and counting it twice moved
    /// requests off warm replicas for nothing in `benchmarks/routing`.)
    public func routingCandidate(_ index: Int, model: String, nowMicros: UInt64, engineMaxAgeMicros: UInt64) -> RoutingCandidate {
        let status = upstream(index)
        var waiting: UInt64 = 0
        var adapter = RoutingCandidate.AdapterFit.notAdapter
        if let load = status.engineLoad, load.isFresh(nowMicros: nowMicros, maxAgeMicros: engineMaxAgeMicros) {
            waiting = load.waiting ?? 0
            // Only an upstream with LoRA enabled reads its model list for the adapter.
            if let lora = load.lora, lora.maxAdapters > 0, status.servesAdapter(model) == true {
                adapter = lora.running.mayContain(model) ? .running : lora.hasFreeSlot ? .freeSlot : .full
            }
        }
        let (inflight, prefill) = upstreamLoad(upstream: index)
        // This gateway's own requests fill the engine's batch now, whatever the last scrape (up
        // to an interval old) said: with `capacity` in flight, one more waits.
        if let capacity = status.engineBatchCapacity, inflight >= capacity { waiting = max(waiting, inflight - capacity + 1) }
        return RoutingCandidate(
            index: index, isWell: status.isWell, inflight: inflight, engineWaiting: waiting, pendingPrefillBlocks: prefill, adapter: adapter)
    }

    /// A number that grows by one per call, shared by every worker (round robin).
    public func nextRoutingTicket() -> UInt64 { global(.routingTicket).loadThenWrappingIncrement(ordering: .relaxed) }
}
