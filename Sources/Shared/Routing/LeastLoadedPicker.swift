/// `routing: least_loaded`: the well upstreams before the unwell ones, each group by fewest
/// requests in flight across all workers plus those waiting in the upstream's engine (when
/// its scraped figure is fresh); ties keep configuration order.
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
