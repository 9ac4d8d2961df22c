/// The gateway's routes: the only values the `route` metric label and log field take.
public enum Route: String, Sendable, CaseIterable {
    case health = "/health"
    case ready = "/ready"
    case metrics = "/metrics"
    /// How long no API request was open, for an idle-shutdown guardrail (no key needed).
    case idle = "/idle"
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
        case .health, .ready, .metrics, .idle, .models: "GET"
        case .chatCompletions, .completions, .embeddings: "POST"
        case .other: ""
        }
    }

    /// True for routes that need a client key.
    public var requiresAuth: Bool {
        switch self {
        case .models, .chatCompletions, .completions, .embeddings: true
        case .health, .ready, .metrics, .idle, .other: false
        }
    }

    /// Matches a request path (query string and a trailing slash ignored).
    public init(path: String) {
        // Byte-wise over the path's contiguous UTF-8: it runs on every request.
        var path = path
        self = path.withUTF8 { bytes in
            var end = bytes.firstIndex { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") } ?? bytes.count
            if end > 1, bytes[end - 1] == UInt8(ascii: "/") { end -= 1 }
            let p = UnsafeBufferPointer(rebasing: bytes[..<end])
            return Self.paths.first { $0.1.count == p.count && p.elementsEqual($0.1) }?.0 ?? .other
        }
    }

    /// Every route but ``other`` with its path's bytes.
    private static let paths: [(Route, [UInt8])] = allCases.filter { $0 != .other }.map { ($0, Array($0.rawValue.utf8)) }
}
