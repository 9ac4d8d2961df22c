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
