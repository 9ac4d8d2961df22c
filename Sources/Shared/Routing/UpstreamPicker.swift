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

/// `routing: least_loaded`: the well upstreams before the unwell ones, each group by fewest
/// requests in flight across all workers; ties keep configuration order.
public struct LeastLoadedPicker: UpstreamPicker {
    public init() {}

    public var needsPromptMatch: Bool { false }

    public func decide(_ request: RoutingRequest) -> RoutingDecision {
        let order = request.candidates.enumerated()
            .sorted { a, b in
                (a.element.isWell ? 0 : 1, a.element.queue, a.offset) < (b.element.isWell ? 0 : 1, b.element.queue, b.offset)
            }
            .map(\.element.index)
        return RoutingDecision(order: order, reason: .load)
    }
}

/// `routing: round_robin`: the well upstreams in turn (the ticket is shared by every worker),
/// then the unwell ones.
public struct RoundRobinPicker: UpstreamPicker {
    public init() {}

    public var needsPromptMatch: Bool { false }

    public func decide(_ request: RoutingRequest) -> RoutingDecision {
        let well = request.candidates.filter(\.isWell).map(\.index)
        let unwell = request.candidates.filter { !$0.isWell }.map(\.index)
        guard !well.isEmpty else { return RoutingDecision(order: unwell, reason: .load) }
        let start = Int(request.ticket % UInt64(well.count))
        return RoutingDecision(order: Array(well[start...] + well[..<start]) + unwell, reason: .load)
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
