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

extension SharedSegment {
    /// Upstream `index` as routing sees it (its matched blocks left at 0); engine figures
    /// older than `engineMaxAgeMicros` are not used.
    public func routingCandidate(_ index: Int, nowMicros: UInt64, engineMaxAgeMicros: UInt64) -> RoutingCandidate {
        let status = upstream(index)
        var waiting: UInt64 = 0
        if let load = status.engineLoad, load.isFresh(nowMicros: nowMicros, maxAgeMicros: engineMaxAgeMicros) {
            waiting = load.waiting ?? 0
        }
        return RoutingCandidate(
            index: index, isWell: status.health != .down && status.breaker.phase == .closed, inflight: inflightRequests(upstream: index),
            engineWaiting: waiting)
    }

    /// A number that grows by one per call, shared by every worker (round robin).
    public func nextRoutingTicket() -> UInt64 { global(.routingTicket).loadThenWrappingIncrement(ordering: .relaxed) }
}
