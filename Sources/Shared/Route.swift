/// The gateway's routes: the only values the `route` metric label and log field take.
public enum Route: String, Sendable, CaseIterable {
    case health = "/health"
    case ready = "/ready"
    case metrics = "/metrics"
    case models = "/v1/models"
    case chatCompletions = "/v1/chat/completions"
    case completions = "/v1/completions"
    case embeddings = "/v1/embeddings"
    /// Anything else (a 404): never the raw path.
    case other = "other"

    /// The route template, as metrics and logs show it.
    public var template: String { rawValue }

    /// The method each route answers.
    public var method: String {
        switch self {
        case .health, .ready, .metrics, .models: "GET"
        case .chatCompletions, .completions, .embeddings: "POST"
        case .other: ""
        }
    }

    /// True for routes that need a client key.
    public var requiresAuth: Bool {
        switch self {
        case .models, .chatCompletions, .completions, .embeddings: true
        case .health, .ready, .metrics, .other: false
        }
    }

    /// Matches a request path (query string and a trailing slash ignored).
    public init(path: String) {
        var p = Substring(path)
        if let q = p.firstIndex(where: { $0 == "?" || $0 == "#" }) { p = p[..<q] }
        if p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        self = Route(rawValue: String(p)).flatMap { $0 == .other ? nil : $0 } ?? .other
    }
}
