import Testing

@testable import Shared

/// `routing:` in the config file.
@Suite struct RoutingConfigurationTests {
    @Test func eachModelNamesItsPolicyCacheAwareByDefault() throws {
        let config = try GatewayConfigurationTests().load(
            file: """
                upstreams:
                  a: { url: http://127.0.0.1:18000 }
                  b: { url: http://127.0.0.1:18001 }
                models:
                  chat: { upstreams: [a, b] }
                  turns: { upstreams: [a, b], routing: round_robin }
                  fewest: { upstreams: [a, b], routing: least_loaded }
                """)
        let policies = Dictionary(uniqueKeysWithValues: config.models.map { ($0.name, $0.routing) })
        #expect(policies == ["chat": .cacheAware, "turns": .roundRobin, "fewest": .leastLoaded])
        let registry = ModelRegistry(configuration: config)
        #expect(registry.configuredTarget("turns")?.routing == .roundRobin)
    }

    @Test func anUnknownPolicyNamesItsKeyAndTheChoices() {
        let error = GatewayConfigurationTests().error {
            try GatewayConfigurationTests().load(
                file: "upstreams:\n  a: { url: http://127.0.0.1:18000 }\nmodels:\n  chat: { upstreams: [a], routing: random }\n")
        }
        #expect(error?.key.hasSuffix("models.chat.routing") == true)
        #expect(error?.reason.contains("cache_aware|least_loaded|round_robin") == true)
    }
}
