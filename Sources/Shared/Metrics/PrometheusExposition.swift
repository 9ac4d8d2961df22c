/// Renders every worker's counters (summed over all slots) and the supervisor's gauges as
/// one Prometheus text exposition (format 0.0.4). Series appear once they are non-zero,
/// except gauges and per-upstream series, which are always present.
public struct PrometheusExposition: Sendable {
    let models: [String]
    let upstreams: [String]
    let retired: Set<Int>

    /// - Parameters:
    ///   - models: model label values in order (the first 32 get one).
    ///   - upstreams: upstream names by position, and whether a reload retired them
    ///     (their counters stay; their gauges go).
    public init(models: [String], upstreams: [(name: String, retired: Bool)]) {
        self.models = Array(models.prefix(MetricsLayout.maxModels))
        self.upstreams = Array(upstreams.prefix(SegmentLayout.maxUpstreams).map(\.name))
        self.retired = Set(upstreams.indices.filter { upstreams[$0].retired })
    }

    func modelLabel(_ index: Int) -> String { index < models.count ? models[index] : "other" }

    /// The exposition text.
    public func render(segment: SharedSegment) -> String {
        render(totals: segment.metricTotals(), segment: segment)
    }

    /// A hash of everything the text reports except the `/metrics` route's own counters
    /// (``ExpositionCache``): equal fingerprints, equal texts but for those.
    public func fingerprint(totals: [UInt64], segment: SharedSegment) -> UInt64 {
        var hasher = Hasher()
        for (index, value) in totals.enumerated() where value != 0 && !Self.scrapeWords.contains(index) {
            hasher.combine(index)
            hasher.combine(value)
        }
        for u in upstreams.indices {
            hasher.combine(segment.upstream(u).breaker.word)
            hasher.combine(segment.upstream(u).health.rawValue)
            hasher.combine(segment.inflightRequests(upstream: u))
            let load = segment.upstream(u).engineLoad  // its figures, not its time: unchanged load, same text
            hasher.combine(load?.waiting)
            hasher.combine(load?.kvCacheUsage)
        }
        hasher.combine(segment.workersRunning)
        hasher.combine(segment.workerRestartsTotal)
        hasher.combine(segment.lastRequestMillis)
        return UInt64(bitPattern: Int64(hasher.finalize()))
    }

    /// The counters every scrape moves: `/metrics`' own requests and durations.
    static let scrapeWords: Set<Int> = {
        var words = Set(
            MetricsLayout.methods.flatMap { method in
                (0..<MetricsLayout.statusSlots).map { slot in
                    MetricsLayout.httpRequests(
                        route: .metrics, method: method, status: slot < MetricsLayout.statuses.count ? MetricsLayout.statuses[slot] : 0)
                }
            })
        let base = MetricsLayout.httpDuration(route: .metrics)
        words.formUnion(base..<(base + MetricsLayout.histogramWords))
        return words
    }()

    /// The exposition text of `totals` (``SharedSegment/metricTotals()``) and the segment's gauges.
    public func render(totals: [UInt64], segment: SharedSegment) -> String {
        var out = ""
        out.reserveCapacity(16 * 1024)

        header(&out, "llm_gateway_http_requests_total", "counter", "HTTP requests answered, by route template, method and status.")
        for route in Route.allCases {
            for method in MetricsLayout.methods {
                for statusSlot in 0..<MetricsLayout.statusSlots {
                    let status = statusSlot < MetricsLayout.statuses.count ? String(MetricsLayout.statuses[statusSlot]) : "other"
                    let value = totals[
                        MetricsLayout.httpRequests(
                            route: route, method: method, status: statusSlot < MetricsLayout.statuses.count ? MetricsLayout.statuses[statusSlot] : 0)]
                    if value > 0 {
                        sample(&out, "llm_gateway_http_requests_total", [("route", route.template), ("method", method), ("status", status)], value)
                    }
                }
            }
        }

        header(&out, "llm_gateway_http_request_duration_seconds", "histogram", "Time from request head to the end of the response.")
        for route in Route.allCases {
            histogram(&out, "llm_gateway_http_request_duration_seconds", [("route", route.template)], totals, base: MetricsLayout.httpDuration(route: route))
        }

        header(&out, "llm_gateway_upstream_requests_total", "counter", "Attempts at an upstream, by model, upstream and outcome.")
        for model in 0...MetricsLayout.maxModels {
            for (u, upstream) in upstreams.enumerated() {
                for outcome in MetricsLayout.Outcome.allCases {
                    let value = totals[MetricsLayout.upstream(model: model, upstream: u, outcome: outcome)]
                    if value > 0 {
                        sample(
                            &out, "llm_gateway_upstream_requests_total", [("model", modelLabel(model)), ("upstream", upstream), ("outcome", outcome.label)],
                            value)
                    }
                }
            }
        }

        header(&out, "llm_gateway_time_to_first_token_seconds", "histogram", "Time from sending a streamed request upstream to its first event.")
        for model in 0...MetricsLayout.maxModels {
            histogram(&out, "llm_gateway_time_to_first_token_seconds", [("model", modelLabel(model))], totals, base: MetricsLayout.ttft(model: model))
        }

        header(&out, "llm_gateway_tokens_total", "counter", "Tokens the upstreams reported, by model and kind.")
        for model in 0...MetricsLayout.maxModels {
            for (kind, completion) in [("prompt", false), ("completion", true)] {
                let value = totals[MetricsLayout.tokens(model: model, completion: completion)]
                if value > 0 { sample(&out, "llm_gateway_tokens_total", [("model", modelLabel(model)), ("kind", kind)], value) }
            }
        }

        header(&out, "llm_gateway_routing_decisions_total", "counter", "Requests routed among a model's upstreams, by model and reason.")
        for model in 0...MetricsLayout.maxModels {
            for reason in RoutingReason.allCases {
                let value = totals[MetricsLayout.routing(model: model, reason: reason)]
                if value > 0 { sample(&out, "llm_gateway_routing_decisions_total", [("model", modelLabel(model)), ("reason", reason.label)], value) }
            }
        }
        header(
            &out, "llm_gateway_prefix_match_ratio", "histogram",
            "Share of a routed prompt's blocks the chosen upstream held in its prefix cache (cache_aware routing).")
        for model in 0...MetricsLayout.maxModels {
            histogram(
                &out, "llm_gateway_prefix_match_ratio", [("model", modelLabel(model))], totals, base: MetricsLayout.prefixMatch(model: model),
                bounds: MetricsLayout.matchBuckets, sumScale: 1e6)
        }

        header(&out, "llm_gateway_rate_limited_total", "counter", "Requests refused with 429, by the limit that refused them.")
        for limit in MetricsLayout.Limit.allCases {
            sample(&out, "llm_gateway_rate_limited_total", [("limit", limit.label)], totals[MetricsLayout.rateLimited(limit)])
        }

        // Only with REDIS_URL: a worker's state word is 0 without it.
        var storeStates = Set<UInt64>()
        for slot in 0..<segment.slotsUsed {
            storeStates.insert(segment.metricsArea(slot: slot).word(MetricsLayout.limitsStoreStateWord).load(ordering: .relaxed))
        }
        storeStates.remove(MetricsLayout.LimitsStoreState.none.rawValue)
        if !storeStates.isEmpty {
            header(
                &out, "llm_gateway_limits_store_up", "gauge",
                "1 while every worker keeps per-key limits in Redis; 0 while any applies REDIS_FAILURE_MODE instead.")
            sample(&out, "llm_gateway_limits_store_up", [], storeStates.contains(MetricsLayout.LimitsStoreState.down.rawValue) ? 0 : 1)
            header(&out, "llm_gateway_limits_store_latency_seconds", "histogram", "Time Redis took to answer a limits command.")
            histogram(
                &out, "llm_gateway_limits_store_latency_seconds", [], totals, base: MetricsLayout.limitsStoreLatencyBase,
                bounds: MetricsLayout.limitsStoreBuckets)
            header(&out, "llm_gateway_limits_store_errors_total", "counter", "Limits commands Redis did not answer in time or at all, by kind.")
            for kind in MetricsLayout.limitsStoreErrorKinds {
                sample(&out, "llm_gateway_limits_store_errors_total", [("kind", kind)], totals[MetricsLayout.limitsStoreError(kind: kind)])
            }
            header(
                &out, "llm_gateway_limits_store_charges_dropped_total", "counter",
                "Token charges never recorded in Redis: the retry queue was full, or they failed too often.")
            sample(&out, "llm_gateway_limits_store_charges_dropped_total", [], totals[MetricsLayout.limitsStoreDroppedWord])
        }

        header(&out, "llm_gateway_circuit_breaker_state", "gauge", "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open.")
        for (u, upstream) in upstreams.enumerated() where !retired.contains(u) {
            sample(&out, "llm_gateway_circuit_breaker_state", [("upstream", upstream)], segment.upstream(u).breaker.phase.rawValue)
        }
        header(&out, "llm_gateway_upstream_up", "gauge", "1 when the upstream answered its last health check.")
        for (u, upstream) in upstreams.enumerated() where !retired.contains(u) {
            sample(&out, "llm_gateway_upstream_up", [("upstream", upstream)], segment.upstream(u).health == .up ? 1 : 0)
        }
        let loads = upstreams.indices.map { retired.contains($0) ? nil : segment.upstream($0).engineLoad }
        header(&out, "llm_gateway_upstream_queue_depth", "gauge", "Requests waiting in the upstream engine's queue, as last scraped from its /metrics.")
        for (u, upstream) in upstreams.enumerated() {
            if let waiting = loads[u]?.waiting { sample(&out, "llm_gateway_upstream_queue_depth", [("upstream", upstream)], waiting) }
        }
        header(&out, "llm_gateway_upstream_kv_cache_usage_ratio", "gauge", "Share of the upstream engine's KV cache in use, as last scraped from its /metrics.")
        for (u, upstream) in upstreams.enumerated() {
            if let usage = loads[u]?.kvCacheUsage {
                sample(&out, "llm_gateway_upstream_kv_cache_usage_ratio", [("upstream", upstream)], millionths: UInt64((usage * 1_000_000).rounded()))
            }
        }
        header(&out, "llm_gateway_inflight_requests", "gauge", "Requests in flight to upstreams, all workers.")
        var inflight: UInt64 = 0
        for u in 0..<upstreams.count { inflight &+= segment.inflightRequests(upstream: u) }
        sample(&out, "llm_gateway_inflight_requests", [], inflight)
        header(&out, "llm_gateway_workers", "gauge", "Worker processes alive.")
        sample(&out, "llm_gateway_workers", [], segment.workersRunning)
        header(&out, "llm_gateway_worker_restarts_total", "counter", "Workers replaced after dying.")
        sample(&out, "llm_gateway_worker_restarts_total", [], segment.workerRestartsTotal)
        header(
            &out, "llm_gateway_last_request_timestamp_seconds", "gauge",
            "Unix time an API request last started or ended (the gateway's start before any).")
        var stamp: [UInt8] = []
        DecimalText.appendThousandths(Int(clamping: segment.lastRequestMillis), to: &stamp)
        out += "llm_gateway_last_request_timestamp_seconds \(String(decoding: stamp, as: UTF8.self))\n"
        return out
    }

    private func header(_ out: inout String, _ name: String, _ type: String, _ help: String) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    private func sample(_ out: inout String, _ name: String, _ labels: [(String, String)], _ value: UInt64) {
        out += name
        appendLabels(&out, labels)
        out += " \(value)\n"
    }

    /// A share in millionths, written as a decimal (`0.000001` resolution).
    private func sample(_ out: inout String, _ name: String, _ labels: [(String, String)], millionths: UInt64) {
        out += name
        appendLabels(&out, labels)
        out += " \(millionths / 1_000_000)."
        let fraction = String(millionths % 1_000_000)
        out += String(repeating: "0", count: 6 - fraction.count) + fraction + "\n"
    }

    private func appendLabels(_ out: inout String, _ labels: [(String, String)]) {
        guard !labels.isEmpty else { return }
        out += "{"
        for (i, (key, value)) in labels.enumerated() {
            if i > 0 { out += "," }
            out += key
            out += "=\""
            for c in value.unicodeScalars {
                switch c {
                case "\\": out += "\\\\"
                case "\"": out += "\\\""
                case "\n": out += "\\n"
                default: out.unicodeScalars.append(c)
                }
            }
            out += "\""
        }
        out += "}"
    }

    /// A histogram stored as its buckets, +Inf, the sum (in 1/`sumScale` units) and the count.
    private func histogram(
        _ out: inout String, _ name: String, _ labels: [(String, String)], _ totals: [UInt64], base: Int,
        bounds: [Double] = MetricsLayout.durationBuckets, sumScale: Double = 1e9
    ) {
        let countIndex = base + bounds.count + 2
        guard totals[countIndex] > 0 else { return }
        var cumulative: UInt64 = 0
        for (i, bound) in bounds.enumerated() {
            cumulative &+= totals[base + i]
            sample(&out, name + "_bucket", labels + [("le", "\(bound)")], cumulative)
        }
        cumulative &+= totals[base + bounds.count]
        sample(&out, name + "_bucket", labels + [("le", "+Inf")], cumulative)
        let sumSeconds = Double(totals[base + bounds.count + 1]) / sumScale
        out += name + "_sum"
        appendLabels(&out, labels)
        out += " \(sumSeconds)\n"
        // The count is the +Inf bucket, so the two always agree even mid-update.
        sample(&out, name + "_count", labels, cumulative)
    }
}
