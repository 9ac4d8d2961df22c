/// `routing: round_robin`: the well upstreams in turn (the ticket is shared by every worker),
/// then the unwell ones.
public struct RoundRobinPicker: UpstreamPicker {
    public init() {}

    public var needsPromptMatch: Bool { false }

    public func decide(_ request: RoutingRequest) -> RoutingDecision {
        let candidates = request.candidates
        let wellCount = candidates.lazy.filter(\.isWell).count
        guard wellCount > 0 else { return RoutingDecision(order: candidates.map(\.index), reason: .load) }
        // The well in turn from the ticket's, then the unwell, in configuration order.
        let start = Int(request.ticket % UInt64(wellCount))
        var order: [Int] = []
        order.reserveCapacity(candidates.count)
        var wellSeen = 0
        for c in candidates where c.isWell {
            if wellSeen >= start { order.append(c.index) }
            wellSeen += 1
        }
        wellSeen = 0
        for c in candidates where c.isWell {
            if wellSeen < start { order.append(c.index) }
            wellSeen += 1
        }
        for c in candidates where !c.isWell { order.append(c.index) }
        return RoutingDecision(order: order, reason: .load)
    }
}
