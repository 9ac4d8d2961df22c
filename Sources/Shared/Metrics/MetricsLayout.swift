/// Where each metric series lives in a worker's metrics area: dense arrays indexed by
/// label values from fixed sets (route templates, a status list, configured model and
/// upstream numbers), so no label can carry client input and the area has a fixed size.
public enum MetricsLayout {
    /// Methods with their own label value; anything else is `other`.
    public static let methods = ["GET", "POST", "HEAD", "other"]
    /// Status codes with their own label value; anything else is `other`.
    public static let statuses = [200, 400, 401, 403, 404, 405, 413, 429, 431, 499, 500, 502, 503, 504]
    /// Upper bounds (seconds) of the latency histograms.
    public static let durationBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
    /// Models with their own label value (configuration order); the rest are `other`.
    public static let maxModels = 32
    /// Outcomes of an upstream attempt.
    public enum Outcome: Int, CaseIterable, Sendable {
        case success, error, timeout, unavailable, rejected
        public var label: String {
            switch self {
            case .success: "success"
            case .error: "error"
            case .timeout: "timeout"
            case .unavailable: "unavailable"
            case .rejected: "circuit_open"
            }
        }
    }
    /// `limit` label values of the rate-limited counter.
    public enum Limit: Int, CaseIterable, Sendable {
        case requests, tokens, tableFull
        public var label: String {
            switch self {
            case .requests: "requests"
            case .tokens: "tokens"
            case .tableFull: "table_full"
            }
        }
    }

    /// Upper bounds of the prefix-match histogram (the share of a prompt's blocks the
    /// chosen upstream held).
    public static let matchBuckets: [Double] = [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1]

    static let routes = Route.allCases.count
    static let statusSlots = statuses.count + 1
    static let histogramWords = durationBuckets.count + 3  // buckets, +Inf, sum (ns), count
    static let modelSlots = maxModels + 1

    static let httpRequestsBase = 0
    static let httpDurationBase = httpRequestsBase + routes * methods.count * statusSlots
    static let upstreamBase = httpDurationBase + routes * histogramWords
    static let ttftBase = upstreamBase + modelSlots * SegmentLayout.maxUpstreams * Outcome.allCases.count
    static let tokensBase = ttftBase + modelSlots * histogramWords
    static let rateLimitedBase = tokensBase + modelSlots * 2
    static let routingBase = rateLimitedBase + Limit.allCases.count
    static let matchHistogramWords = matchBuckets.count + 3  // buckets, +Inf, sum (millionths), count
    static let prefixMatchBase = routingBase + modelSlots * RoutingReason.allCases.count
    static let limitsStoreStateWord = prefixMatchBase + modelSlots * matchHistogramWords
    static let limitsStoreHistogramWords = limitsStoreBuckets.count + 3  // buckets, +Inf, sum (ns), count
    static let limitsStoreLatencyBase = limitsStoreStateWord + 1
    static let limitsStoreErrorsBase = limitsStoreLatencyBase + limitsStoreHistogramWords
    static let limitsStoreDroppedWord = limitsStoreErrorsBase + limitsStoreErrorKinds.count
    /// Words in one worker's metrics area.
    public static let words = limitsStoreDroppedWord + 1

    /// Upper bounds (seconds) of the limits store's latency histogram: a Redis round trip
    /// on loopback is tens of microseconds, its deadline 25 ms by default.
    public static let limitsStoreBuckets: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]
    /// `kind` label values of `llm_gateway_limits_store_errors_total` (a Redis error's kind).
    public static let limitsStoreErrorKinds = ["timeout", "not_connected", "connection_closed", "server", "protocol"]

    /// What a worker's limits store is, in its state word: no Redis, Redis in use, Redis not
    /// usable (the failure mode applies).
    public enum LimitsStoreState: UInt64, Sendable {
        case none = 0, up = 1, down = 2
    }

    static func methodIndex(_ method: String) -> Int { methods.firstIndex(of: method) ?? methods.count - 1 }
    static func statusIndex(_ status: Int) -> Int { statuses.firstIndex(of: status) ?? statuses.count }
    static func routeIndex(_ route: Route) -> Int { Route.allCases.firstIndex(of: route)! }

    static func httpRequests(route: Route, method: String, status: Int) -> Int {
        httpRequestsBase + (routeIndex(route) * methods.count + methodIndex(method)) * statusSlots + statusIndex(status)
    }
    static func httpDuration(route: Route) -> Int { httpDurationBase + routeIndex(route) * histogramWords }
    static func upstream(model: Int, upstream: Int, outcome: Outcome) -> Int {
        upstreamBase + (model * SegmentLayout.maxUpstreams + upstream) * Outcome.allCases.count + outcome.rawValue
    }
    static func ttft(model: Int) -> Int { ttftBase + model * histogramWords }
    static func tokens(model: Int, completion: Bool) -> Int { tokensBase + model * 2 + (completion ? 1 : 0) }
    static func rateLimited(_ limit: Limit) -> Int { rateLimitedBase + limit.rawValue }
    static func routing(model: Int, reason: RoutingReason) -> Int { routingBase + model * RoutingReason.allCases.count + reason.rawValue }
    static func prefixMatch(model: Int) -> Int { prefixMatchBase + model * matchHistogramWords }
    static func limitsStoreError(kind: String) -> Int {
        limitsStoreErrorsBase + (limitsStoreErrorKinds.firstIndex(of: kind) ?? limitsStoreErrorKinds.count - 1)
    }

}
