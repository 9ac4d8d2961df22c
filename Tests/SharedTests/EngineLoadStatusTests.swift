import Testing

@testable import Shared

/// The engine load the supervisor publishes per upstream, and the `metrics:` settings that
/// say whether it is scraped.
@Suite struct EngineLoadStatusTests {
    @Test func aPublishedLoadReadsBackWithItsUnknownFigures() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        #expect(segment.upstream(3).engineLoad == nil, "never scraped")
        let load = EngineLoadSnapshot(waiting: 4, running: nil, kvCacheUsage: 0.4375, readAtMicros: 1_000)
        segment.upstream(3).publishEngineLoad(load)
        #expect(segment.upstream(3).engineLoad == load)
        #expect(segment.upstream(2).engineLoad == nil, "its own block only")
        segment.upstream(3).publishEngineLoad(EngineLoadSnapshot(waiting: nil, running: 9, kvCacheUsage: 7, readAtMicros: 2_000))
        #expect(segment.upstream(3).engineLoad == EngineLoadSnapshot(waiting: nil, running: 9, kvCacheUsage: 1, readAtMicros: 2_000))
    }

    @Test func freshnessCountsFromTheRead() {
        let load = EngineLoadSnapshot(waiting: 0, running: 0, kvCacheUsage: 0, readAtMicros: 10_000_000)
        #expect(load.isFresh(nowMicros: 11_000_000, maxAgeMicros: 2_000_000))
        #expect(load.isFresh(nowMicros: 13_000_000, maxAgeMicros: 2_000_000) == false)
    }

    func load(_ file: String) throws -> GatewayConfiguration {
        try GatewayConfigurationTests().load(file: file)
    }

    @Test func vLLMUpstreamsAreScrapedCloudOnesAreNot() throws {
        let config = try load(
            """
            upstreams:
              gpu: { url: http://127.0.0.1:18000 }
              custom: { url: http://127.0.0.1:18001, metrics: /engine/metrics }
              quiet: { url: http://127.0.0.1:18002, metrics: none }
              cloud: { url: https://api.example.com, api_key_env: CLOUD_KEY }
            models:
              m:
                upstreams: [gpu, custom, quiet]
            """)
        let paths = Dictionary(uniqueKeysWithValues: config.upstreams.map { ($0.name, $0.metricsPath) })
        #expect(paths == ["gpu": "/metrics", "custom": "/engine/metrics", "quiet": nil, "cloud": nil])
        #expect(config.server.metricsInterval == 0.5)
    }

    @Test func aBadMetricsValueNamesItsKey() {
        let error = GatewayConfigurationTests().error {
            try load("upstreams:\n  gpu: { url: http://127.0.0.1:18000, metrics: 5 }\nmodels:\n  m: { upstreams: [gpu] }\n")
        }
        #expect(error?.key.hasSuffix("upstreams.gpu.metrics") == true)
        let interval = GatewayConfigurationTests().error {
            try GatewayConfigurationTests().load(env: ["UPSTREAM_METRICS_INTERVAL": "0"])
        }
        #expect(interval?.key == "UPSTREAM_METRICS_INTERVAL")
    }
}
