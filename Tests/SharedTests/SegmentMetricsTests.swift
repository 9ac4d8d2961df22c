import Testing

@testable import Shared

@Suite struct SegmentMetricsTests {
    /// What the request path records lands in the segment, and every label value comes
    /// from a fixed set: a model the configuration does not name counts as `other`.
    @Test func recordsLandInTheSegmentWithBoundedLabels() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let metrics = GatewayMetrics(segment: segment, slot: 3, models: ["qwen"])
        metrics.request(route: .models, method: "GET", status: 200, seconds: 0.01)
        metrics.request(route: .models, method: "GET", status: 200, seconds: 0.01)
        metrics.request(route: .other, method: "GET", status: 404, seconds: 0.01)
        metrics.timeToFirstToken(model: "qwen", seconds: 0.03)
        metrics.tokens(model: "secret-model-a-client-typed", prompt: 5, completion: 0)

        let totals = segment.metricTotals()
        #expect(totals[MetricsLayout.httpRequests(route: .models, method: "GET", status: 200)] == 2)
        #expect(totals[MetricsLayout.httpRequests(route: .other, method: "GET", status: 404)] == 1)
        let text = PrometheusExposition(models: ["qwen"], upstreams: []).render(segment: segment)
        #expect(text.contains(#"llm_gateway_http_requests_total{route="/v1/models",method="GET",status="200"} 2"#))
        #expect(text.contains(#"llm_gateway_time_to_first_token_seconds_count{model="qwen"} 1"#))
        #expect(text.contains(#"llm_gateway_time_to_first_token_seconds_bucket{model="qwen",le="0.05"} 1"#))
        #expect(text.contains(#"llm_gateway_tokens_total{model="other",kind="prompt"} 5"#))
        #expect(!text.contains("secret"))
    }

    /// A scrape sums the areas of the slots a worker ever had, not all 128 (an
    /// unauthenticated /metrics cost 420 µs); a dead worker's slot stays counted.
    @Test func totalsCoverEverySlotEverUsedAndNoMore() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        #expect(segment.slotsUsed == 0)
        GatewayMetrics(segment: segment, slot: 0, models: []).request(route: .health, method: "GET", status: 200, seconds: 0.001)
        segment.workerSlot(6).reset(generation: 1, now: MonotonicInstant(nanoseconds: 1))
        #expect(segment.slotsUsed == 7)
        GatewayMetrics(segment: segment, slot: 6, models: []).request(route: .health, method: "GET", status: 200, seconds: 0.001)
        segment.workerSlot(6).release()  // the worker died: its counts stay
        GatewayMetrics(segment: segment, slot: 2, models: []).request(route: .health, method: "GET", status: 200, seconds: 0.001)
        #expect(segment.slotsUsed == 7)
        #expect(segment.metricTotals()[MetricsLayout.httpRequests(route: .health, method: "GET", status: 200)] == 3)
    }

    /// `/idle`'s inputs: the latest activity of any worker wins, and open requests add up.
    @Test func activityIsTheLatestOfAnyWorker() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        segment.noteRequest(atMillis: 2_000)
        segment.noteRequest(atMillis: 1_000)
        #expect(segment.lastRequestMillis == 2_000)
        segment.workerSlot(0).apiRequestStarted()
        segment.workerSlot(3).apiRequestStarted()
        segment.workerSlot(3).apiRequestStarted()
        segment.workerSlot(3).apiRequestEnded()
        #expect(segment.openRequests == 2)
        segment.workerSlot(3).release()
        #expect(segment.openRequests == 1, "a dead worker's open requests go with it")
        let text = PrometheusExposition(models: [], upstreams: []).render(segment: segment)
        #expect(text.contains("llm_gateway_last_request_timestamp_seconds 2.0\n"))
    }
}
