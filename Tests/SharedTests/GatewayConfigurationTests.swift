import Foundation
import RedisURLParsing
import Testing

@testable import Shared

@Suite struct GatewayConfigurationTests {
    func load(
        flags: [String: String] = [:], env: [String: String] = [:], dotEnv: [String: String] = [:],
        file: String? = nil
    ) throws -> GatewayConfiguration {
        var flags = flags
        if file != nil { flags["config"] = "gw.yaml" }
        let sources = ConfigurationSources(
            flags: flags, environment: env, dotEnv: dotEnv, cpuCount: 4,
            readFile: { path in
                guard path == "gw.yaml", let file else { throw FileReadError(path: path, reason: "No such file") }
                return file
            })
        return try GatewayConfiguration.load(from: sources)
    }

    func error(_ body: () throws -> GatewayConfiguration) -> ConfigurationError? {
        do {
            _ = try body()
            return nil
        } catch let error as ConfigurationError {
            return error
        } catch {
            return nil
        }
    }

    @Test func defaults() throws {
        let config = try load()
        #expect(config.server.bind == BindAddress(host: "127.0.0.1", port: 8000))
        #expect(config.server.workers == 4)
        #expect(config.server.drainTimeout == 30)
        #expect(config.limits.requestsPerMinute == 60)
        #expect(config.limits.tokensPerMinute == 0)
        #expect(config.circuitBreaker.enabled && config.circuitBreaker.threshold == 5)
        #expect(config.upstreams == [.init(name: "default", url: "http://127.0.0.1:18000")])
        #expect(!config.auth.isEnabled)
    }

    @Test func precedenceIsFlagThenEnvironmentThenDotEnvThenFile() throws {
        let file = "workers: 2\ndrain_timeout: 7\nrate_limit_rpm: 5\n"
        #expect(try load(file: file).server.workers == 2)
        #expect(try load(dotEnv: ["WORKERS": "3"], file: file).server.workers == 3)
        #expect(try load(env: ["WORKERS": "5"], dotEnv: ["WORKERS": "3"], file: file).server.workers == 5)
        #expect(try load(flags: ["workers": "6"], env: ["WORKERS": "5"], file: file).server.workers == 6)
        let config = try load(env: ["RATE_LIMIT_RPM": "9"], file: file)
        #expect(config.limits.requestsPerMinute == 9 && config.server.drainTimeout == 7)
    }

    @Test func errorsNameTheKeyAsTheOperatorWroteIt() {
        #expect(error { try load(flags: ["workers": "x"]) }?.key == "--workers")
        #expect(error { try load(env: ["WORKERS": "0"]) }?.key == "WORKERS")
        #expect(error { try load(dotEnv: ["LOG_LEVEL": "loud"]) }?.key == ".env:LOG_LEVEL")
        #expect(error { try load(file: "workers: many\n") }?.key == "gw.yaml: workers")
        #expect(error { try load(file: "wrokers: 2\n") }?.key == "gw.yaml: wrokers")
        #expect(error { try load(env: ["CIRCUIT_BREAKER_ENABLED": "maybe"]) }?.key == "CIRCUIT_BREAKER_ENABLED")
        #expect(error { try load(flags: ["bind": "8000"]) }?.key == "--bind")
        #expect(error { try load(flags: ["upstream": "http://x/v1"]) }?.reason.contains("without /v1") == true)
    }

    @Test func upstreamKeepAliveIsSetGloballyOrPerUpstream() throws {
        #expect(try load().server.upstreamKeepAliveTimeout == 4)
        #expect(try load(env: ["UPSTREAM_KEEPALIVE_TIMEOUT": "60"]).server.upstreamKeepAliveTimeout == 60)
        #expect(try load(file: "upstream_keepalive_timeout: 0\n").server.upstreamKeepAliveTimeout == 0)
        let file = "upstreams:\n  a: { url: http://127.0.0.1:1, keepalive_timeout: 1.5 }\n  b: { url: http://127.0.0.1:2 }\n"
        #expect(try load(file: file).upstreams.map(\.keepAliveTimeout) == [1.5, nil])
        #expect(error { try load(env: ["UPSTREAM_KEEPALIVE_TIMEOUT": "-1"]) }?.key == "UPSTREAM_KEEPALIVE_TIMEOUT")
        #expect(error { try load(env: ["UPSTREAM_KEEPALIVE_TIMEOUT": "3601"]) }?.key == "UPSTREAM_KEEPALIVE_TIMEOUT")
        let bad = "upstreams:\n  a: { url: http://127.0.0.1:1, keepalive_timeout: soon }\n"
        #expect(error { try load(file: bad) }?.key == "gw.yaml: upstreams.a.keepalive_timeout")
    }

    @Test func nonLoopbackBindNeedsAuth() throws {
        #expect(error { try load(flags: ["bind": "0.0.0.0:8000"]) }?.key == "BEARER_TOKEN")
        #expect(try load(flags: ["bind": "0.0.0.0:8000"], env: ["BEARER_TOKEN": "s3cret"]).auth.isEnabled)
        #expect(try load(flags: ["bind": "[::1]:8000"]).server.bind.isLoopback)
        #expect(try load(flags: ["bind": "127.0.0.2:8000"]).server.bind.isLoopback)
    }

    @Test func secretsNeverAppearInErrors() {
        let e = error { try load(flags: ["bind": "0.0.0.0:1"], env: ["BEARER_TOKEN": ""]) }
        #expect(e != nil)
        let token = error { try load(env: ["BEARER_TOKEN": "sk-very-secret", "WORKERS": "x"]) }
        #expect(token?.description.contains("sk-very-secret") == false)
    }

    static let fullFile = """
        upstreams:
          vllm-a: { url: http://127.0.0.1:18000, health: /health }
          cloud:  { url: https://api.example.com, api_key_env: CLOUD_API_KEY }
        models:
          qwen2.5-7b:
            upstreams: [vllm-a]
            upstream_model: Qwen/Qwen2.5-7B-Instruct-AWQ
            tool_parser: hermes
            aliases: [qwen]
            fallbacks: [cloud-gpt]
          cloud-gpt:
            upstreams: [cloud]
            upstream_model: gpt-4o-mini
        keys:
          - name: alice
            sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
            models: [qwen2.5-7b]
            rpm: 120
            tpm: 60000
        """

    @Test func theSpecFileShapeLoads() throws {
        let config = try load(file: Self.fullFile)
        #expect(config.upstreams.map(\.name) == ["cloud", "vllm-a"])
        #expect(config.upstreams[0].apiKeyEnv == "CLOUD_API_KEY")
        let qwen = try #require(config.models.first { $0.name == "qwen2.5-7b" })
        #expect(qwen.upstreamModel == "Qwen/Qwen2.5-7B-Instruct-AWQ" && qwen.toolParser == "hermes" && qwen.aliases == ["qwen"])
        #expect(
            config.auth.keys == [
                .init(name: "alice", sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", models: ["qwen2.5-7b"], rpm: 120, tpm: 60000)
            ])
        #expect(config.auth.isEnabled)
    }

    @Test func badSectionsAreNamed() {
        let unknownUpstream = "upstreams:\n  a: { url: http://127.0.0.1:1 }\nmodels:\n  m: { upstreams: [b] }\n"
        #expect(error { try load(file: unknownUpstream) }?.key == "gw.yaml: models.m.upstreams")
        let parser = "upstreams:\n  a: { url: http://127.0.0.1:1 }\nmodels:\n  m: { upstreams: [a], tool_parser: magic }\n"
        #expect(error { try load(file: parser) }?.key == "gw.yaml: models.m.tool_parser")
        let digest = "keys:\n  - { name: k, sha256: abc }\n"
        #expect(error { try load(file: digest) }?.key == "gw.yaml: keys[0].sha256")
        let fallback = "upstreams:\n  a: { url: http://127.0.0.1:1 }\nmodels:\n  m: { upstreams: [a], fallbacks: [z] }\n"
        #expect(error { try load(file: fallback) }?.key == "gw.yaml: models.m.fallbacks")
        #expect(error { try load(file: "models: [\n") }?.reason.hasPrefix("not valid YAML") == true)
    }

    @Test(arguments: [
        "http://169.254.169.254", "http://169.254.170.2:80", "http://[fd00:ec2::254]", "http://100.100.100.200",
        "http://metadata.google.internal", "http://METADATA.GOOGLE.INTERNAL.", "http://2852039166", "http://0xa9fea9fe",
        "http://0251.0376.0251.0376", "http://169.254.43518", "http://[::ffff:169.254.169.254]", "http://[::ffff:a9fe:a9fe]",
        "http://169.254.1.1", "http://[fe80::a9fe:a9fe]",
    ])
    func metadataServiceUpstreamsAreRefused(url: String) {
        let e = error { try load(flags: ["upstream": url]) }
        #expect(e?.key == "--upstream", "\(url) was accepted")
        #expect(e?.reason.contains("metadata") == true)
    }

    @Test func ordinaryUpstreamsAreAccepted() throws {
        #expect(try load(flags: ["upstream": "http://127.0.0.1:18000/"]).upstreams[0].url == "http://127.0.0.1:18000")
        #expect(try load(flags: ["upstream": "demo"]).upstreams[0].isDemo)
        #expect(try load(flags: ["upstream": "https://10.0.0.5:8443"]).upstreams[0].url == "https://10.0.0.5:8443")
    }

    @Test func dotEnvParsing() {
        let parsed = ConfigurationSources.parseDotEnv("# comment\nexport WORKERS=3\nBEARER_TOKEN=\"a b\"\nX='y'\n\nbad line\n")
        #expect(parsed == ["WORKERS": "3", "BEARER_TOKEN": "a b", "X": "y"])
    }

    @Test func theToolAndEventCapsAreSettings() throws {
        let defaults = try load()
        #expect(defaults.server.maxToolsPerRequest == 128)
        #expect(defaults.server.maxSSEEventBytes == 16 << 20)
        let set = try load(env: ["MAX_TOOLS_PER_REQUEST": "64"], file: "max_sse_event_bytes: 65536\n")
        #expect(set.server.maxToolsPerRequest == 64)
        #expect(set.server.maxSSEEventBytes == 65536)
        #expect(error { try load(env: ["MAX_TOOLS_PER_REQUEST": "0"]) }?.key == "MAX_TOOLS_PER_REQUEST")
        #expect(error { try load(env: ["MAX_SSE_EVENT_BYTES": "10"]) }?.key == "MAX_SSE_EVENT_BYTES")
    }

    /// A reload never turns authentication off (issue 20, finding 4).
    @Test func aReloadThatWouldTurnAuthenticationOffIsRefused() throws {
        let keys = "keys:\n  - { name: alice, sha256: \(String(repeating: "a", count: 64)) }\n"
        let running = try load(file: keys)
        for fresh in [try load(file: ""), try load(file: "{}\n"), try load(file: "upstreams: { a: { url: http://127.0.0.1:18000 } }\n")] {
            let refusal = error {
                _ = try fresh.checkingAuthentication(against: running); return fresh
            }
            #expect(refusal?.key == "gw.yaml: keys")
            #expect(refusal?.reason.contains("turn authentication off") == true)
        }
        #expect(try load(file: "{}\n").checkingAuthentication(against: load()) == nil, "off stays off")
        let token = try load(env: ["BEARER_TOKEN": "t"], file: "{}\n")
        #expect(try token.checkingAuthentication(against: running) == "reload: authentication changes from 1 key(s) from the config file to BEARER_TOKEN")
        #expect(try running.checkingAuthentication(against: running) == nil)
    }

    @Test func sharedLimitsAreOffByDefault() throws {
        let limits = try load().sharedLimits
        #expect(limits.redisURL == nil)
        #expect(limits.failureMode == .local)
        #expect(limits.gatewayHosts == 1)
        #expect(limits.redisTimeout == 0.025)
        #expect(try load(env: ["REDIS_URL": " "]).sharedLimits.redisURL == nil)
    }

    @Test func sharedLimitsComeFromTheEnvironmentOrTheFile() throws {
        let env = try load(env: ["REDIS_URL": "rediss://gw:pw@cache:6380/2", "REDIS_FAILURE_MODE": "Closed", "GATEWAY_HOSTS": "3", "REDIS_TIMEOUT": "0.05"])
        #expect(env.sharedLimits.redisURL == RedisURL(tls: true, host: "cache", port: 6380, user: "gw", password: "pw", database: 2))
        #expect(env.sharedLimits.failureMode == .closed)
        #expect(env.sharedLimits.gatewayHosts == 3)
        #expect(env.sharedLimits.redisTimeout == 0.05)
        let file = try load(file: "redis_url: redis://127.0.0.1\nredis_failure_mode: open\ngateway_hosts: 2\nredis_timeout: 0.1\n")
        #expect(file.sharedLimits.redisURL == RedisURL(host: "127.0.0.1"))
        #expect(file.sharedLimits.failureMode == .open)
        #expect(file.sharedLimits.gatewayHosts == 2)
        #expect(file.sharedLimits.redisTimeout == 0.1)
        // The environment wins over the file, as for every setting.
        #expect(try load(env: ["GATEWAY_HOSTS": "5"], file: "gateway_hosts: 2\n").sharedLimits.gatewayHosts == 5)
    }

    @Test func badSharedLimitSettingsNameTheirKey() {
        #expect(error { try load(env: ["REDIS_URL": "http://cache:6379"]) }?.key == "REDIS_URL")
        #expect(error { try load(file: "redis_url: redis://cache:99999\n") }?.key == "gw.yaml: redis_url")
        #expect(error { try load(env: ["REDIS_FAILURE_MODE": "fail"]) }?.reason.contains("local|open|closed") == true)
        #expect(error { try load(env: ["GATEWAY_HOSTS": "0"]) }?.key == "GATEWAY_HOSTS")
        #expect(error { try load(env: ["GATEWAY_HOSTS": "two"]) }?.key == "GATEWAY_HOSTS")
        #expect(error { try load(dotEnv: ["REDIS_TIMEOUT": "0"]) }?.key == ".env:REDIS_TIMEOUT")
        #expect(error { try load(env: ["REDIS_TIMEOUT": "60"]) }?.key == "REDIS_TIMEOUT")
    }

    @Test func aRefusedRedisURLNeverShowsItsPassword() {
        for url in ["redis://:hunter2@cache:0", "redis://gw:hunter2@ca che", "redis://:hunter2@cache/x", "http://:hunter2@cache"] {
            let refused = error { try load(env: ["REDIS_URL": url]) }
            #expect(refused?.key == "REDIS_URL")
            #expect(refused?.description.contains("hunter2") == false, "\(url)")
        }
    }

    @Test func theRedisURLSurvivesTheWorkersEncoding() throws {
        let config = try load(env: ["REDIS_URL": "redis://gw:p%40ss@cache:6380/1", "GATEWAY_HOSTS": "2"])
        let decoded = try JSONDecoder().decode(GatewayConfiguration.self, from: JSONEncoder().encode(config))
        #expect(decoded == config)
        #expect(decoded.sharedLimits.redisURL?.password == "p@ss")
    }
}
