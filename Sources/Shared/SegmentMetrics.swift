import Atomics
import CoreMetrics

/// One worker's metrics area in the segment. Only its worker writes it; any process reads
/// it. Areas belong to slots, not to processes: a replacement worker continues its slot's
/// counters, so totals summed over all slots never go down when workers die, and a scrape
/// reads the same fixed number of words however many workers came and went.
public struct MetricsArea: Sendable {
    let segment: SharedSegment
    let offset: Int

    func word(_ index: Int) -> UnsafeAtomic<UInt64> { segment.atomic(at: offset + index * 8) }

    /// Adds `value` to the counter at `index`.
    func add(_ index: Int, _ value: UInt64 = 1) { word(index).wrappingIncrement(by: value, ordering: .relaxed) }

    /// Records `seconds` in the histogram starting at `base`.
    func observe(histogram base: Int, seconds: Double) {
        add(base + MetricsLayout.bucket(seconds))
        add(base + MetricsLayout.durationBuckets.count + 1, UInt64(max(0, seconds) * 1e9))
        add(base + MetricsLayout.durationBuckets.count + 2)
    }
}

extension SharedSegment {
    /// The metrics area of worker slot `slot`.
    public func metricsArea(slot: Int) -> MetricsArea {
        precondition((0..<SegmentLayout.maxWorkers).contains(slot), "slot out of range")
        return MetricsArea(segment: self, offset: SegmentLayout.metricsOffset + slot * SegmentLayout.metricsAreaSize)
    }

    /// Every slot's counters summed, word by word.
    public func metricTotals() -> [UInt64] {
        var totals = [UInt64](repeating: 0, count: MetricsLayout.words)
        // Only slots a worker ever had (an unauthenticated /metrics summed all 128 areas:
        // 420 µs a scrape); a dead worker's counters stay in its slot, which stays counted.
        for slot in 0..<slotsUsed {
            let area = metricsArea(slot: slot)
            for index in 0..<MetricsLayout.words {
                let value = area.word(index).load(ordering: .relaxed)
                if value != 0 { totals[index] &+= value }
            }
        }
        return totals
    }
}

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

    /// A request refused by a limit.
    public func rateLimited(_ limit: MetricsLayout.Limit) { area.add(MetricsLayout.rateLimited(limit)) }
}

/// A swift-metrics backend over the segment, so code using the `Counter`/`Timer` API lands
/// in the same shared counters. It knows the gateway's metric names and label sets;
/// anything else is dropped (a label outside the fixed sets becomes `other`).
public struct SegmentMetricsFactory: MetricsFactory {
    let metrics: GatewayMetrics

    public init(metrics: GatewayMetrics) { self.metrics = metrics }

    final class SlotCounter: CounterHandler, Sendable {
        let area: MetricsArea
        let index: Int?
        init(area: MetricsArea, index: Int?) {
            self.area = area
            self.index = index
        }
        func increment(by amount: Int64) { if let index, amount > 0 { area.add(index, UInt64(amount)) } }
        func reset() {}
    }

    final class SlotTimer: TimerHandler, Sendable {
        let area: MetricsArea
        let base: Int?
        init(area: MetricsArea, base: Int?) {
            self.area = area
            self.base = base
        }
        func recordNanoseconds(_ duration: Int64) {
            if let base { area.observe(histogram: base, seconds: Double(max(0, duration)) / 1e9) }
        }
    }

    final class Ignored: RecorderHandler, MeterHandler, FloatingPointCounterHandler, Sendable {
        func record(_ value: Int64) {}
        func record(_ value: Double) {}
        func set(_ value: Int64) {}
        func set(_ value: Double) {}
        func increment(by: Double) {}
        func decrement(by: Double) {}
        func reset() {}
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        let d = Dictionary(dimensions, uniquingKeysWith: { a, _ in a })
        var index: Int?
        switch label {
        case "llm_gateway_http_requests_total":
            index = MetricsLayout.httpRequests(
                route: Route(rawValue: d["route"] ?? "") ?? .other, method: d["method"] ?? "other", status: Int(d["status"] ?? "") ?? 0)
        case "llm_gateway_rate_limited_total":
            index = MetricsLayout.Limit.allCases.first { $0.label == d["limit"] }.map(MetricsLayout.rateLimited)
        case "llm_gateway_tokens_total":
            index = MetricsLayout.tokens(model: metrics.model(d["model"]), completion: d["kind"] == "completion")
        default:
            index = nil
        }
        return SlotCounter(area: metrics.area, index: index)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let d = Dictionary(dimensions, uniquingKeysWith: { a, _ in a })
        switch label {
        case "llm_gateway_http_request_duration_seconds":
            return SlotTimer(area: metrics.area, base: MetricsLayout.httpDuration(route: Route(rawValue: d["route"] ?? "") ?? .other))
        case "llm_gateway_time_to_first_token_seconds":
            return SlotTimer(area: metrics.area, base: MetricsLayout.ttft(model: metrics.model(d["model"])))
        default:
            return SlotTimer(area: metrics.area, base: nil)
        }
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler { Ignored() }
    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler { Ignored() }
    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler { Ignored() }
    public func destroyCounter(_ handler: any CounterHandler) {}
    public func destroyMeter(_ handler: any MeterHandler) {}
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    public func destroyRecorder(_ handler: any RecorderHandler) {}
    public func destroyTimer(_ handler: any TimerHandler) {}
}
