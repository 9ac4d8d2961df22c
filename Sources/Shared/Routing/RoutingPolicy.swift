/// How a model with several upstreams spreads its requests (`routing:` in the config file).
public enum RoutingPolicy: String, Sendable, Codable, CaseIterable {
    /// Prefix-cache affinity weighed against load (the default with several upstreams).
    case cacheAware = "cache_aware"
    /// Fewest requests in flight across all workers.
    case leastLoaded = "least_loaded"
    /// In turn, across all workers.
    case roundRobin = "round_robin"
}
