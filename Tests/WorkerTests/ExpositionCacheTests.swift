import Shared
import Testing

@testable import Worker

/// `/metrics` is rendered again only when something it reports changed (or a second went
/// by): a client scraping in a loop costs a hash, not a render (issue 20, finding 14).
@Suite struct ExpositionCacheTests {
    @Test func scrapesAloneReuseTheTextAnythingElseRendersAgain() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let metrics = GatewayMetrics(segment: segment, slot: 0, models: [])
        let cache = ExpositionCache(exposition: PrometheusExposition(models: [], upstreams: [("a", false)]))
        let first = cache.text(segment: segment, now: 1_000)
        metrics.request(route: .metrics, method: "GET", status: 200, seconds: 0.0001)
        #expect(cache.text(segment: segment, now: 2_000) == first, "only /metrics' own counters moved")
        metrics.request(route: .health, method: "GET", status: 200, seconds: 0.0001)
        let second = cache.text(segment: segment, now: 3_000)
        #expect(second != first)
        #expect(second.contains(#"llm_gateway_http_requests_total{route="/metrics",method="GET",status="200"} 1"#))
        metrics.request(route: .metrics, method: "GET", status: 200, seconds: 0.0001)
        #expect(cache.text(segment: segment, now: 3_000 + ExpositionCache.maxAge) != second, "never older than maxAge")
    }

    @Test func aGaugeChangeRendersAgain() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let cache = ExpositionCache(exposition: PrometheusExposition(models: [], upstreams: [("a", false)]))
        let first = cache.text(segment: segment, now: 1_000)
        segment.upstream(0).health = .up
        #expect(cache.text(segment: segment, now: 2_000) != first)
    }
}
