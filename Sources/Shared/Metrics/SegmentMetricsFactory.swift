import Atomics
import CoreMetrics

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
