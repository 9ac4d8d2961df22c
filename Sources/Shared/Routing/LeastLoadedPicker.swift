/// `routing: least_loaded`: the well upstreams before the unwell ones, each group by fewest
/// requests in flight across all workers plus those waiting in the upstream's engine (when
/// its scraped figure is fresh); ties keep configuration order. For a LoRA adapter, well
/// upstreams running it come first, then those with a free adapter slot.
public struct LeastLoadedPicker: UpstreamPicker {
    public init() {}

    public var needsPromptMatch: Bool { false }

    public func decide(_ request: RoutingRequest) -> RoutingDecision {
        let well = request.candidates.filter(\.isWell)
        let (kept, narrowed) = well.preferringAdapter()
        func rank(_ c: RoutingCandidate) -> Int { !c.isWell ? 2 : narrowed && c.adapter != kept[0].adapter ? 1 : 0 }
        let order = request.candidates.enumerated()
            .sorted { a, b in
                (rank(a.element), a.element.queue, a.offset) < (rank(b.element), b.element.queue, b.offset)
            }
            .map(\.element.index)
        return RoutingDecision(order: order, reason: narrowed ? .lora : .load)
    }
}
