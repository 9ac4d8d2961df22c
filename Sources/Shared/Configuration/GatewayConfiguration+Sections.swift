/// Parsing of the config file's `upstreams:`, `models:` and `keys:` sections.
extension GatewayConfiguration {
    /// The `tool_parser` values a model may name: the registry's families, one list.
    public static var toolParsers: Set<String> { Set(ToolCallParserRegistry.standard.names) }

    static func parseUpstreams(_ node: Any?, fileName: String) throws -> [Upstream] {
        let key = "\(fileName): upstreams"
        guard let map = node as? [String: Any], !map.isEmpty else {
            throw ConfigurationError(key: key, reason: "expected a mapping of upstream names to { url: ... }")
        }
        guard map.count <= SegmentLayout.maxUpstreams else {
            throw ConfigurationError(key: key, reason: "at most \(SegmentLayout.maxUpstreams) upstreams")
        }
        var result: [Upstream] = []
        for name in map.keys.sorted() {
            let entryKey = "\(key).\(name)"
            try checkName(name, key: entryKey)
            guard let entry = map[name] as? [String: Any] else {
                throw ConfigurationError(key: entryKey, reason: "expected a mapping with url:")
            }
            try rejectUnknown(entry, known: ["url", "health", "api_key_env", "connect_timeout", "timeout", "keepalive_timeout", "metrics"], key: entryKey)
            guard let url = entry["url"] as? String, !url.isEmpty else {
                throw ConfigurationError(key: "\(entryKey).url", reason: "required, e.g. http://127.0.0.1:18000")
            }
            let health = entry["health"] as? String ?? "/health"
            guard health.hasPrefix("/") else {
                throw ConfigurationError(key: "\(entryKey).health", reason: "must be a path starting with /")
            }
            var upstream = Upstream(name: name, url: url, healthPath: health)
            if let env = entry["api_key_env"] {
                guard let env = env as? String, !env.isEmpty else {
                    throw ConfigurationError(key: "\(entryKey).api_key_env", reason: "expected an environment variable name")
                }
                upstream.apiKeyEnv = env
                upstream.metricsPath = nil  // a cloud API has no engine metrics (unless `metrics:` says)
            }
            if let value = entry["connect_timeout"] {
                upstream.connectTimeout = try seconds(Resolved(value: "\(value)", key: "\(entryKey).connect_timeout"), in: 0.1...600)
            }
            if let value = entry["timeout"] {
                upstream.timeout = try seconds(Resolved(value: "\(value)", key: "\(entryKey).timeout"), in: 0.1...86_400)
            }
            if let value = entry["metrics"] {
                guard let path = value as? String, path == "none" || path.hasPrefix("/") else {
                    throw ConfigurationError(key: "\(entryKey).metrics", reason: "expected a path starting with / or none")
                }
                upstream.metricsPath = path == "none" ? nil : path
            }
            if let value = entry["keepalive_timeout"] {
                upstream.keepAliveTimeout = try seconds(Resolved(value: "\(value)", key: "\(entryKey).keepalive_timeout"), in: 0...3600)
            }
            result.append(try validatedUpstream(upstream, key: "\(entryKey).url"))
        }
        return result
    }

    static func validatedUpstream(_ upstream: Upstream, key: String) throws -> Upstream {
        var upstream = upstream
        if upstream.isDemo { return upstream }
        while upstream.url.hasSuffix("/") { upstream.url.removeLast() }
        if upstream.url.hasSuffix("/v1") {
            throw ConfigurationError(key: key, reason: "give the root URL without /v1 (got \"\(upstream.url)\")")
        }
        guard let parsed = UpstreamURL(parsing: upstream.url) else {
            throw ConfigurationError(key: key, reason: "expected http://HOST[:PORT] or https://HOST[:PORT] or demo (got \"\(upstream.url)\")")
        }
        if let reason = UpstreamAddressGuard.refusal(forHost: parsed.host) {
            throw ConfigurationError(key: key, reason: reason)
        }
        return upstream
    }

    static func parseModels(_ node: Any?, config: GatewayConfiguration, fileName: String) throws -> [Model] {
        let key = "\(fileName): models"
        guard let map = node as? [String: Any], !map.isEmpty else {
            throw ConfigurationError(key: key, reason: "expected a mapping of model names to { upstreams: [...] }")
        }
        let upstreamNames = Set(config.upstreams.map(\.name))
        var models: [Model] = []
        var taken: [String: String] = [:]
        for name in map.keys.sorted() {
            let entryKey = "\(key).\(name)"
            guard let entry = map[name] as? [String: Any] else {
                throw ConfigurationError(key: entryKey, reason: "expected a mapping with upstreams:")
            }
            try rejectUnknown(entry, known: ["upstreams", "upstream_model", "tool_parser", "fallbacks", "aliases", "routing"], key: entryKey)
            let upstreams = try stringList(entry["upstreams"], key: "\(entryKey).upstreams", required: true)
            for u in upstreams where !upstreamNames.contains(u) {
                throw ConfigurationError(key: "\(entryKey).upstreams", reason: "no upstream named \"\(u)\" under upstreams:")
            }
            let parser = entry["tool_parser"] as? String ?? "none"
            guard toolParsers.contains(parser) else {
                throw ConfigurationError(
                    key: "\(entryKey).tool_parser", reason: "expected one of \(toolParsers.sorted().joined(separator: "|")) (got \"\(parser)\")")
            }
            var routing = RoutingPolicy.cacheAware
            if let value = entry["routing"] {
                guard let text = value as? String, let policy = RoutingPolicy(rawValue: text) else {
                    throw ConfigurationError(
                        key: "\(entryKey).routing",
                        reason: "expected one of \(RoutingPolicy.allCases.map(\.rawValue).joined(separator: "|")) (got \"\(value)\")")
                }
                routing = policy
            }
            let model = Model(
                name: name, upstreams: upstreams, upstreamModel: entry["upstream_model"] as? String,
                aliases: try stringList(entry["aliases"], key: "\(entryKey).aliases", required: false),
                toolParser: parser,
                fallbacks: try stringList(entry["fallbacks"], key: "\(entryKey).fallbacks", required: false),
                routing: routing
            )
            for clientName in [name] + model.aliases {
                if let other = taken[clientName] {
                    throw ConfigurationError(key: entryKey, reason: "the name \"\(clientName)\" is already used by model \(other)")
                }
                taken[clientName] = name
            }
            models.append(model)
        }
        let modelNames = Set(models.map(\.name))
        for model in models {
            for fallback in model.fallbacks where !modelNames.contains(fallback) || fallback == model.name {
                throw ConfigurationError(key: "\(key).\(model.name).fallbacks", reason: "\"\(fallback)\" is not another configured model")
            }
        }
        return models
    }

    static func parseKeys(_ node: Any?, config: GatewayConfiguration, fileName: String) throws -> [APIKey] {
        let key = "\(fileName): keys"
        guard let list = node as? [Any] else {
            throw ConfigurationError(key: key, reason: "expected a list of { name, sha256, models, rpm, tpm }")
        }
        let modelNames = Set(config.models.map(\.name))
        var keys: [APIKey] = []
        var digests: Set<String> = []
        for (index, item) in list.enumerated() {
            let entryKey = "\(key)[\(index)]"
            guard let entry = item as? [String: Any] else { throw ConfigurationError(key: entryKey, reason: "expected a mapping") }
            try rejectUnknown(entry, known: ["name", "sha256", "models", "rpm", "tpm"], key: entryKey)
            guard let name = entry["name"] as? String, !name.isEmpty else {
                throw ConfigurationError(key: "\(entryKey).name", reason: "required")
            }
            let digest = (entry["sha256"] as? String ?? "").lowercased()
            guard digest.count == 64, digest.allSatisfy(\.isHexDigit) else {
                throw ConfigurationError(key: "\(entryKey).sha256", reason: "expected the 64 hex digits of the key's SHA-256 digest")
            }
            guard digests.insert(digest).inserted else {
                throw ConfigurationError(key: "\(entryKey).sha256", reason: "the same digest is listed twice")
            }
            var apiKey = APIKey(name: name, sha256: digest)
            if entry["models"] != nil {
                let models = try stringList(entry["models"], key: "\(entryKey).models", required: false)
                for m in models where !modelNames.contains(m) {
                    throw ConfigurationError(key: "\(entryKey).models", reason: "no model named \"\(m)\" under models:")
                }
                apiKey.models = models
            }
            if let rpm = entry["rpm"] {
                apiKey.rpm = try integer(Resolved(value: "\(rpm)", key: "\(entryKey).rpm"), in: 1...10_000_000)
            }
            if let tpm = entry["tpm"] {
                apiKey.tpm = try integer(Resolved(value: "\(tpm)", key: "\(entryKey).tpm"), in: 0...1_000_000_000)
            }
            keys.append(apiKey)
        }
        return keys
    }

    static func stringList(_ node: Any?, key: String, required: Bool) throws -> [String] {
        guard let node else {
            if required { throw ConfigurationError(key: key, reason: "required: a list of names") }
            return []
        }
        if let single = node as? String { return [single] }
        guard let list = node as? [Any], let strings = list as? [String], !(required && strings.isEmpty) else {
            throw ConfigurationError(key: key, reason: "expected a list of names")
        }
        return strings
    }

    static func rejectUnknown(_ entry: [String: Any], known: Set<String>, key: String) throws {
        for k in entry.keys.sorted() where !known.contains(k) {
            throw ConfigurationError(key: "\(key).\(k)", reason: "unknown key (known: \(known.sorted().joined(separator: ", ")))")
        }
    }

    static func checkName(_ name: String, key: String) throws {
        let allowed = name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
        }
        guard allowed, !name.isEmpty, name.utf8.count <= 63 else {
            throw ConfigurationError(key: key, reason: "names use letters, digits, - _ . (at most 63)")
        }
    }
}
