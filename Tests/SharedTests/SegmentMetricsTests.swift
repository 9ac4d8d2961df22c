import CoreMetrics
import Testing

@testable import Shared

@Suite struct SegmentMetricsTests {
    @Test func swiftMetricsCallsLandInTheSegmentWithBoundedLabels() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let metrics = GatewayMetrics(segment: segment, slot: 3, models: ["qwen"])
        let factory = SegmentMetricsFactory(metrics: metrics)
        Counter(label: "llm_gateway_http_requests_total", dimensions: [("route", "/v1/models"), ("method", "GET"), ("status", "200")], factory: factory)
            .increment(by: 2)
        // a path a client typed is not a label value: it counts under route="other"
        Counter(label: "llm_gateway_http_requests_total", dimensions: [("route", "/secret/path"), ("method", "GET"), ("status", "404")], factory: factory)
            .increment()
        Timer(label: "llm_gateway_time_to_first_token_seconds", dimensions: [("model", "qwen")], factory: factory).recordMilliseconds(30)
        Counter(label: "some_other_metric", factory: factory).increment()  // not ours: dropped

        let totals = segment.metricTotals()
        #expect(totals[MetricsLayout.httpRequests(route: .models, method: "GET", status: 200)] == 2)
        #expect(totals[MetricsLayout.httpRequests(route: .other, method: "GET", status: 404)] == 1)
        #expect(totals.reduce(0, +) > 3)
        let text = PrometheusExposition(models: ["qwen"], upstreams: []).render(segment: segment)
        #expect(text.contains(#"llm_gateway_http_requests_total{route="/v1/models",method="GET",status="200"} 2"#))
        #expect(text.contains(#"llm_gateway_time_to_first_token_seconds_count{model="qwen"} 1"#))
        #expect(text.contains(#"llm_gateway_time_to_first_token_seconds_bucket{model="qwen",le="0.05"} 1"#))
        #expect(!text.contains("secret") && !text.contains("some_other_metric"))
    }
}
