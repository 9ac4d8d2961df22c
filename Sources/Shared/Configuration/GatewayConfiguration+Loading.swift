import RedisURLParsing
import Yams

extension GatewayConfiguration {
    /// A scalar setting: its flag, environment variable and config-file key.
    struct Setting {
        var flag: String?
        var env: String
        var fileKey: String?
    }

    /// Where a resolved value came from, as the operator would name it in a message.
    struct Resolved {
        var value: String
        var key: String
    }

    static let settings: [String: Setting] = [
        "bind": Setting(flag: "bind", env: "BIND", fileKey: "bind"),
        "workers": Setting(flag: "workers", env: "WORKERS", fileKey: "workers"),
        "upstream": Setting(flag: "upstream", env: "VLLM_UPSTREAM_URL", fileKey: nil),
        "config": Setting(flag: "config", env: "LLM_GATEWAY_CONFIG", fileKey: nil),
        "drainTimeout": Setting(flag: "drain-timeout", env: "DRAIN_TIMEOUT", fileKey: "drain_timeout"),
        "user": Setting(flag: "user", env: "RUN_AS_USER", fileKey: "user"),
        "bearerToken": Setting(flag: nil, env: "BEARER_TOKEN", fileKey: nil),
        "rpm": Setting(flag: nil, env: "RATE_LIMIT_RPM", fileKey: "rate_limit_rpm"),
        "tpm": Setting(flag: nil, env: "RATE_LIMIT_TPM", fileKey: "rate_limit_tpm"),
        "maxBody": Setting(flag: nil, env: "MAX_REQUEST_BODY_BYTES", fileKey: "max_request_body_bytes"),
        "breakerEnabled": Setting(flag: nil, env: "CIRCUIT_BREAKER_ENABLED", fileKey: "circuit_breaker_enabled"),
        "breakerThreshold": Setting(flag: nil, env: "CIRCUIT_BREAKER_THRESHOLD", fileKey: "circuit_breaker_threshold"),
        "breakerCooldown": Setting(flag: nil, env: "CIRCUIT_BREAKER_COOLDOWN", fileKey: "circuit_breaker_cooldown"),
        "heartbeat": Setting(flag: nil, env: "WORKER_HEARTBEAT_TIMEOUT", fileKey: "worker_heartbeat_timeout"),
        "logLevel": Setting(flag: nil, env: "LOG_LEVEL", fileKey: "log_level"),
        "headerTimeout": Setting(flag: nil, env: "REQUEST_HEADER_TIMEOUT", fileKey: "request_header_timeout"),
        "bodyTimeout": Setting(flag: nil, env: "REQUEST_BODY_TIMEOUT", fileKey: "request_body_timeout"),
        "keepAliveTimeout": Setting(flag: nil, env: "KEEPALIVE_TIMEOUT", fileKey: "keepalive_timeout"),
        "maxConnections": Setting(flag: nil, env: "MAX_CONNECTIONS_PER_WORKER", fileKey: "max_connections_per_worker"),
        "healthInterval": Setting(flag: nil, env: "UPSTREAM_HEALTH_INTERVAL", fileKey: "upstream_health_interval"),
        "metricsInterval": Setting(flag: nil, env: "UPSTREAM_METRICS_INTERVAL", fileKey: "upstream_metrics_interval"),
        "connectTimeout": Setting(flag: nil, env: "UPSTREAM_CONNECT_TIMEOUT", fileKey: "upstream_connect_timeout"),
        "upstreamTimeout": Setting(flag: nil, env: "UPSTREAM_TIMEOUT", fileKey: "upstream_timeout"),
        "upstreamKeepAlive": Setting(flag: nil, env: "UPSTREAM_KEEPALIVE_TIMEOUT", fileKey: "upstream_keepalive_timeout"),
        "maxTools": Setting(flag: nil, env: "MAX_TOOLS_PER_REQUEST", fileKey: "max_tools_per_request"),
        "maxSSEEvent": Setting(flag: nil, env: "MAX_SSE_EVENT_BYTES", fileKey: "max_sse_event_bytes"),
        "sessionHeader": Setting(flag: nil, env: "ROUTING_SESSION_HEADER", fileKey: "routing_session_header"),
        "runningTokens": Setting(flag: nil, env: "ROUTING_RUNNING_REQUEST_TOKENS", fileKey: "routing_running_request_tokens"),
        "waitingTokens": Setting(flag: nil, env: "ROUTING_WAITING_REQUEST_TOKENS", fileKey: "routing_waiting_request_tokens"),
        "coldSlack": Setting(flag: nil, env: "ROUTING_COLD_SLACK", fileKey: "routing_cold_slack"),
        "redisURL": Setting(flag: nil, env: "REDIS_URL", fileKey: "redis_url"),
        "redisFailureMode": Setting(flag: nil, env: "REDIS_FAILURE_MODE", fileKey: "redis_failure_mode"),
        "gatewayHosts": Setting(flag: nil, env: "GATEWAY_HOSTS", fileKey: "gateway_hosts"),
        "redisTimeout": Setting(flag: nil, env: "REDIS_TIMEOUT", fileKey: "redis_timeout"),
    ]

    static let fileSectionKeys: Set<String> = ["upstreams", "models", "keys"]

    /// Log levels `LOG_LEVEL` accepts.
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Resolves and validates the whole configuration.
    /// - Throws: ``ConfigurationError`` naming the first key whose value cannot be used.
    public static func load(from sources: ConfigurationSources) throws -> GatewayConfiguration {
        var config = GatewayConfiguration()
        config.server.workers = max(1, min(sources.cpuCount, SegmentLayout.maxWorkers / 2))

        // The config file path itself comes from the flag or environment only.
        var file: [String: Any] = [:]
        var fileName = "config"
        if let path = lookup("config", in: sources, file: [:], fileName: fileName), !path.value.isEmpty {
            config.configFile = path.value
            fileName = path.value
            file = try loadFile(path: path.value, key: path.key, sources: sources)
        }
        func resolved(_ name: String) -> Resolved? { lookup(name, in: sources, file: file, fileName: fileName) }

        if let r = resolved("bind") {
            guard let bind = BindAddress(parsing: r.value) else {
                throw ConfigurationError(key: r.key, reason: "expected HOST:PORT, e.g. 127.0.0.1:8000 (got \"\(r.value)\")")
            }
            config.server.bind = bind
        }
        if let r = resolved("workers") {
            config.server.workers = try integer(r, in: 1...SegmentLayout.maxWorkers / 2)
        }
        if let r = resolved("drainTimeout") { config.server.drainTimeout = try seconds(r, in: 0...86_400) }
        if let r = resolved("user"), !r.value.isEmpty { config.server.user = r.value }
        if let r = resolved("heartbeat") { config.server.heartbeatTimeout = try seconds(r, in: 0.5...3600) }
        if let r = resolved("headerTimeout") { config.server.headerTimeout = try seconds(r, in: 0.1...3600) }
        if let r = resolved("bodyTimeout") { config.server.bodyTimeout = try seconds(r, in: 0.1...3600) }
        if let r = resolved("keepAliveTimeout") { config.server.keepAliveTimeout = try seconds(r, in: 0.1...3600) }
        if let r = resolved("maxConnections") { config.server.maxConnectionsPerWorker = try integer(r, in: 1...1_000_000) }
        if let r = resolved("healthInterval") { config.server.healthInterval = try seconds(r, in: 0.1...3600) }
        if let r = resolved("metricsInterval") { config.server.metricsInterval = try seconds(r, in: 0.05...3600) }
        if let r = resolved("connectTimeout") { config.server.upstreamConnectTimeout = try seconds(r, in: 0.1...600) }
        if let r = resolved("upstreamTimeout") { config.server.upstreamTimeout = try seconds(r, in: 0.1...86_400) }
        if let r = resolved("upstreamKeepAlive") { config.server.upstreamKeepAliveTimeout = try seconds(r, in: 0...3600) }
        if let r = resolved("maxBody") { config.server.maxRequestBodyBytes = try integer(r, in: 1...1 << 30) }
        if let r = resolved("maxTools") { config.server.maxToolsPerRequest = try integer(r, in: 1...4096) }
        if let r = resolved("maxSSEEvent") { config.server.maxSSEEventBytes = try integer(r, in: 1024...1 << 30) }
        if let r = resolved("runningTokens") { config.server.routingRunningRequestTokens = try integer(r, in: 0...10_000_000) }
        if let r = resolved("waitingTokens") { config.server.routingWaitingRequestTokens = try integer(r, in: 0...10_000_000) }
        if let r = resolved("coldSlack") { config.server.routingColdSlack = try integer(r, in: 0...1_000_000) }
        if let r = resolved("sessionHeader") {
            let name = r.value.lowercased()
            guard (1...64).contains(name.utf8.count), name.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D })
            else { throw ConfigurationError(key: r.key, reason: "expected a header name of letters, digits and - (got \"\(r.value)\")") }
            config.server.routingSessionHeader = name
        }
        if let r = resolved("bearerToken"), !r.value.isEmpty { config.auth.bearerToken = r.value }
        if let r = resolved("rpm") { config.limits.requestsPerMinute = try integer(r, in: 1...1_000_000_000) }
        if let r = resolved("tpm") { config.limits.tokensPerMinute = try integer(r, in: 0...1_000_000_000) }
        if let r = resolved("breakerEnabled") { config.circuitBreaker.enabled = try boolean(r) }
        if let r = resolved("breakerThreshold") { config.circuitBreaker.threshold = try integer(r, in: 1...1000) }
        if let r = resolved("breakerCooldown") { config.circuitBreaker.cooldown = try seconds(r, in: 0.1...3600) }
        try loadSharedLimits(into: &config.sharedLimits, resolved)
        if let r = resolved("logLevel") {
            let level = r.value.lowercased()
            guard logLevels.contains(level) else {
                throw ConfigurationError(key: r.key, reason: "expected one of \(logLevels.joined(separator: "|")) (got \"\(r.value)\")")
            }
            config.logLevel = level
        }

        if file["upstreams"] != nil {
            config.upstreams = try parseUpstreams(file["upstreams"], fileName: fileName)
        } else if let r = resolved("upstream") {
            config.upstreams = [try validatedUpstream(GatewayConfiguration.Upstream(name: "default", url: r.value), key: r.key)]
        }
        if file["models"] != nil { config.models = try parseModels(file["models"], config: config, fileName: fileName) }
        if file["keys"] != nil { config.auth.keys = try parseKeys(file["keys"], config: config, fileName: fileName) }

        config.metricModels = config.models.map(\.name)
        if let refusal = config.authRefusal(listeningOn: config.server.bind, describedAs: "--bind is \(config.server.bind)") {
            throw refusal
        }
        return config
    }

    /// `REDIS_URL` and the settings of limits shared through it. A refused URL's message
    /// never repeats the URL (it may carry a password).
    static func loadSharedLimits(into limits: inout SharedLimits, _ resolved: (String) -> Resolved?) throws {
        if let r = resolved("redisURL"), !r.value.trimmingWhitespace().isEmpty {
            do {
                limits.redisURL = try RedisURL(parsing: r.value.trimmingWhitespace())
            } catch {
                throw ConfigurationError(key: r.key, reason: "not a Redis URL: \(error.reason)")
            }
        }
        if let r = resolved("redisFailureMode") {
            let modes = RedisFailureMode.allCases.map(\.rawValue)
            guard let mode = RedisFailureMode(rawValue: r.value.trimmingWhitespace().lowercased()) else {
                throw ConfigurationError(key: r.key, reason: "expected one of \(modes.joined(separator: "|")) (got \"\(r.value)\")")
            }
            limits.failureMode = mode
        }
        if let r = resolved("gatewayHosts") { limits.gatewayHosts = try integer(r, in: 1...1000) }
        if let r = resolved("redisTimeout") { limits.redisTimeout = try seconds(r, in: 0.001...10) }
    }

    static func lookup(_ name: String, in sources: ConfigurationSources, file: [String: Any], fileName: String) -> Resolved? {
        guard let setting = settings[name] else { return nil }
        if let flag = setting.flag, let value = sources.flags[flag] { return Resolved(value: value, key: "--\(flag)") }
        if let value = sources.environment[setting.env] { return Resolved(value: value, key: setting.env) }
        if let value = sources.dotEnv[setting.env] { return Resolved(value: value, key: ".env:\(setting.env)") }
        if let fileKey = setting.fileKey, let value = file[fileKey] {
            return Resolved(value: "\(value)", key: "\(fileName): \(fileKey)")
        }
        return nil
    }

    static func integer(_ r: Resolved, in range: ClosedRange<Int>) throws -> Int {
        guard let n = Int(r.value.trimmingWhitespace()), range.contains(n) else {
            throw ConfigurationError(key: r.key, reason: "expected a whole number from \(range.lowerBound) to \(range.upperBound) (got \"\(r.value)\")")
        }
        return n
    }

    static func seconds(_ r: Resolved, in range: ClosedRange<Double>) throws -> Double {
        var text = r.value.trimmingWhitespace()
        if text.hasSuffix("s") { text.removeLast() }
        guard let n = Double(text), n.isFinite, range.contains(n) else {
            throw ConfigurationError(key: r.key, reason: "expected seconds from \(range.lowerBound) to \(range.upperBound) (got \"\(r.value)\")")
        }
        return n
    }

    static func boolean(_ r: Resolved) throws -> Bool {
        switch r.value.trimmingWhitespace().lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw ConfigurationError(key: r.key, reason: "expected true or false (got \"\(r.value)\")")
        }
    }

    static func loadFile(path: String, key: String, sources: ConfigurationSources) throws -> [String: Any] {
        let text: String
        do {
            text = try sources.readFile(path)
        } catch {
            throw ConfigurationError(key: key, reason: "\(error)")
        }
        let node: Any?
        do {
            node = try Yams.load(yaml: text)
        } catch let error as YamlError {
            throw ConfigurationError(key: key, reason: "not valid YAML: \(Self.describe(error))")
        } catch {
            throw ConfigurationError(key: key, reason: "not valid YAML")
        }
        guard let node else { return [:] }
        guard let map = node as? [String: Any] else {
            throw ConfigurationError(key: path, reason: "the top level must be a mapping of keys")
        }
        let known = fileSectionKeys.union(settings.values.compactMap(\.fileKey))
        for k in map.keys.sorted() where !known.contains(k) {
            throw ConfigurationError(key: "\(path): \(k)", reason: "unknown key (known: \(known.sorted().joined(separator: ", ")))")
        }
        return map
    }

    private static func describe(_ error: YamlError) -> String {
        // Yams' descriptions span several lines; the operator gets one.
        "\(error)".split(whereSeparator: \.isNewline).first.map(String.init) ?? "parse error"
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var s = self[...]
        while let c = s.first, c.isWhitespace { s = s.dropFirst() }
        while let c = s.last, c.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}

extension GatewayConfiguration {
    /// The one rule for running without keys: only where no one else can connect. Nil when
    /// `address` is fine; else the error naming `BEARER_TOKEN` (the bind from --bind, or the
    /// socket systemd passed, as `description` says).
    public func authRefusal(listeningOn address: BindAddress, describedAs description: String) -> ConfigurationError? {
        guard !auth.isEnabled && !address.isLoopback else { return nil }
        return ConfigurationError(key: "BEARER_TOKEN", reason: "empty (auth off) is only allowed on a loopback address, and \(description)")
    }
}
