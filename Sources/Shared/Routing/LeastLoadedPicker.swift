/// `routing: least_loaded`: the well upstreams before the unwell ones, each group by fewest
/// requests in flight across all workers plus those waiting in the upstream's engine (when
/// its scraped figure is fresh); ties keep configuration order. For a LoRA adapter, well
/// upstreams running it come first, then those with a free adapter slot.
public struct LeastLoadedPicker: UpstreamPicker {
    public init() {}

    public var needsPromptMatch: Bool { false }

    public func decide(_ request: RoutingRequest) -> RoutingDecision {
        let candidates = request.candidates
        let adapterTier = candidates.bestAdapterTier
        // Ties keep the candidates' order (the sort is stable).
        func rank(_ c: RoutingCandidate) -> (Int, UInt64) {
            (!c.isWell ? 2 : adapterTier != nil && c.adapter != adapterTier ? 1 : 0, c.queue)
        }
        return RoutingDecision(order: candidates.order { rank($0) < rank($1) }, reason: adapterTier != nil ? .lora : .load)
    }
}
