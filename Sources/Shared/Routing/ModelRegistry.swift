/// Which upstream serves which model name, built once per worker from the configuration
/// and, when no models are configured, from the models the supervisor discovered on the
/// default upstream (read from the shared segment on each lookup).
public struct ModelRegistry: Sendable {
    /// Where a client's model name goes.
    public struct Target: Sendable, Equatable {
        /// The configured model's name (metric label); the discovered name when unconfigured.
        public var name: String
        /// The name the upstream knows.
        public var upstreamModel: String
        /// Indices into the configuration's upstreams, balanced by least in-flight requests.
        public var upstreams: [Int]
        /// The tool-call parser family.
        public var toolParser: String
        /// Configured fallback model names, in order.
        public var fallbacks: [String]
        /// True when the name came from configuration (a bounded label), false when discovered.
        public var configured: Bool
        /// How requests spread over ``upstreams`` when there are several.
        public var routing: RoutingPolicy = .cacheAware
        /// The model's position in the configuration (its metric label index); nil when discovered.
        public var position: Int?
    }

    /// Name of the built-in demo model.
    public static let demoModelName = "demo"

    private let byClientName: [String: Target]
    private let configuredNames: [String]
    public let upstreams: [GatewayConfiguration.Upstream]

    /// The upstream whose models are discovered when none are configured: the first one
    /// still in use (retired upstreams keep their position but serve nothing).
    let discoveryIndex: Int
    /// `[discoveryIndex]`, made once rather than for each request's target.
    private let discoveryUpstreams: [Int]

    public init(configuration: GatewayConfiguration) {
        upstreams = configuration.upstreams
        discoveryIndex = configuration.upstreams.firstIndex { !$0.retired } ?? 0
        discoveryUpstreams = [discoveryIndex]
        let index = Dictionary(uniqueKeysWithValues: configuration.upstreams.enumerated().map { ($1.name, $0) })
        var map: [String: Target] = [:]
        for (position, model) in configuration.models.enumerated() {
            let target = Target(
                name: model.name, upstreamModel: model.upstreamModel ?? model.name,
                upstreams: model.upstreams.compactMap { index[$0] }, toolParser: model.toolParser,
                fallbacks: model.fallbacks, configured: true, routing: model.routing, position: position)
            map[model.name] = target
            for alias in model.aliases { map[alias] = target }
        }
        byClientName = map
        configuredNames = configuration.models.map(\.name)
    }

    /// True when models come from configuration rather than discovery.
    public var isConfigured: Bool { !configuredNames.isEmpty }

    /// The target for a client's model name, or nil when no upstream serves it.
    public func resolve(_ clientName: String, segment: SharedSegment) -> Target? {
        if isConfigured { return byClientName[clientName] }
        guard !upstreams.isEmpty else { return nil }
        let index = discoveryIndex
        let target = Target(
            name: clientName, upstreamModel: clientName, upstreams: discoveryUpstreams, toolParser: "none", fallbacks: [], configured: false)
        if upstreams[index].isDemo { return clientName == Self.demoModelName ? target : nil }
        let status = segment.upstream(index)
        // The list unreadable (the supervisor stopped in the middle of writing it), or
        // nothing discovered yet: let the upstream decide.
        guard let listed = status.modelList(contains: clientName) else { return target }
        if listed.isEmpty && status.health != .up { return target }
        return listed.contains ? target : nil
    }

    /// The configured target named `name` (for fallbacks).
    public func configuredTarget(_ name: String) -> Target? { byClientName[name] }

    /// The configured model at `position` in the configuration.
    public func configuredTarget(position: Int) -> Target? {
        configuredNames.indices.contains(position) ? byClientName[configuredNames[position]] : nil
    }

    /// The models a key scoped to `allowed` (nil: any) may use, in configuration order; the
    /// discovered upstream's first model when none are configured.
    public func targets(allowed: Set<String>?, segment: SharedSegment) -> [Target] {
        if isConfigured {
            return configuredNames.filter { allowed?.contains($0) ?? true }.compactMap { byClientName[$0] }
        }
        return listedNames(segment: segment).first.flatMap { resolve($0, segment: segment) }.map { [$0] } ?? []
    }

    /// Model names a client may list, configured order, or as discovered.
    public func listedNames(segment: SharedSegment) -> [String] {
        if isConfigured { return configuredNames }
        guard !upstreams.isEmpty else { return [] }
        return upstreams[discoveryIndex].isDemo ? [Self.demoModelName] : segment.upstream(discoveryIndex).models
    }

    /// Why the gateway is not ready, or nil when every configured model has an upstream
    /// that answers its health check and lists the model.
    public func notReadyReason(segment: SharedSegment) -> String? {
        if segment.isDraining { return "draining" }
        if !isConfigured {
            guard !upstreams.isEmpty else { return "no upstream configured" }
            let upstream = upstreams[discoveryIndex]
            if upstream.isDemo { return nil }
            let status = segment.upstream(discoveryIndex)
            switch status.health {
            case .unknown: return "upstream \(upstream.name) not checked yet"
            case .down: return "upstream \(upstream.name) is down"
            // Read without copying the list; unreadable for the moment counts as served.
            case .up: return status.modelList(contains: "")?.isEmpty == true ? "upstream \(upstream.name) serves no model" : nil
            }
        }
        for name in configuredNames {
            guard let target = byClientName[name] else { continue }
            let loaded = target.upstreams.contains { index in
                if upstreams[index].isDemo { return true }
                let status = segment.upstream(index)
                guard status.health == .up else { return false }
                // Cloud upstreams (with an API key) may not list every model; vLLM does.
                return upstreams[index].apiKeyEnv != nil || status.models.contains(target.upstreamModel)
            }
            if !loaded { return "model \(name) is not loaded on any healthy upstream" }
        }
        return nil
    }
}
