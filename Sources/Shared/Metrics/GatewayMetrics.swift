import Atomics

/// The gateway's metrics as the request path records them, written into this worker's
/// area of the segment. Label values are indices into fixed sets; a model or upstream
/// outside the configuration counts as `other` and no label ever carries client input.
public struct GatewayMetrics: Sendable {
    let area: MetricsArea
    let modelIndex: [String: Int]

    /// - Parameter models: configured model names in order (the first 32 get their own label).
    public init(segment: SharedSegment, slot: Int, models: [String]) {
        segment.noteSlotUsed(slot)
        area = segment.metricsArea(slot: slot)
        var index: [String: Int] = [:]
        for (i, name) in models.prefix(MetricsLayout.maxModels).enumerated() { index[name] = i }
        modelIndex = index
    }

    func model(_ name: String?) -> Int { name.flatMap { modelIndex[$0] } ?? MetricsLayout.maxModels }

    /// One answered request.
    public func request(route: Route, method: String, status: Int, seconds: Double) {
        area.add(MetricsLayout.httpRequests(route: route, method: method, status: status))
        area.observe(histogram: MetricsLayout.httpDuration(route: route), seconds: seconds)
    }

    /// One attempt at an upstream.
    public func upstream(model: String?, upstream: Int, outcome: MetricsLayout.Outcome) {
        guard (0..<SegmentLayout.maxUpstreams).contains(upstream) else { return }
        area.add(MetricsLayout.upstream(model: self.model(model), upstream: upstream, outcome: outcome))
    }

    /// Time from sending a streamed request upstream to its first event.
    public func timeToFirstToken(model: String?, seconds: Double) {
        area.observe(histogram: MetricsLayout.ttft(model: self.model(model)), seconds: seconds)
    }

    /// Tokens an upstream reported in `usage`.
    public func tokens(model: String?, prompt: Int, completion: Int) {
        let index = self.model(model)
        if prompt > 0 { area.add(MetricsLayout.tokens(model: index, completion: false), UInt64(prompt)) }
        if completion > 0 { area.add(MetricsLayout.tokens(model: index, completion: true), UInt64(completion)) }
    }

    /// Where routing sent a request, why, and how much of its prompt was cached there.
    public func routed(model: String?, reason: RoutingReason, matchedShare: Double?) {
        let index = self.model(model)
        area.add(MetricsLayout.routing(model: index, reason: reason))
        if let matchedShare { area.observe(shareHistogram: MetricsLayout.prefixMatch(model: index), share: matchedShare) }
    }

    /// A request refused by a limit.
    public func rateLimited(_ limit: MetricsLayout.Limit) { area.add(MetricsLayout.rateLimited(limit)) }

    /// This worker's limits store now (`llm_gateway_limits_store_up`).
    public func limitsStore(_ state: MetricsLayout.LimitsStoreState) { area.set(MetricsLayout.limitsStoreStateWord, state.rawValue) }

    /// A limits command Redis answered, in `seconds`.
    public func limitsStoreAnswered(seconds: Double) {
        area.observe(histogram: MetricsLayout.limitsStoreLatencyBase, seconds: seconds, bounds: MetricsLayout.limitsStoreBuckets)
    }

    /// A limits command that failed, by the error's kind (`timeout`, `not_connected`, …).
    public func limitsStoreFailed(kind: String) { area.add(MetricsLayout.limitsStoreError(kind: kind)) }

    /// Token charges given up on (the retry queue was full, or they failed too often).
    public func limitsStoreChargesDropped(_ count: UInt64) {
        if count > 0 { area.add(MetricsLayout.limitsStoreDroppedWord, count) }
    }
}
