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
    /// OpenAI's Responses API.
    case responses = "/v1/responses"
    /// A stored response, by its id (at most ``maxResponseIDBytes`` of `[A-Za-z0-9_.-]`).
    case response = "/v1/responses/{id}"
    case responseCancel = "/v1/responses/{id}/cancel"
    /// Anthropic's Messages API.
    case messages = "/v1/messages"
    case messagesCountTokens = "/v1/messages/count_tokens"
    case rerank = "/v1/rerank"
    case rerankUnversioned = "/rerank"
    case rerankV2 = "/v2/rerank"
    case score = "/v1/score"
    case scoreUnversioned = "/score"
    case tokenize = "/tokenize"
    case detokenize = "/detokenize"
    case pooling = "/pooling"
    case classify = "/classify"
    /// Speech to text (multipart/form-data, its body streamed to the upstream).
    case transcriptions = "/v1/audio/transcriptions"
    case translations = "/v1/audio/translations"
    /// Anything else (a 404): never the raw path.
    case other = "other"

    /// The route template, as metrics and logs show it.
    public var template: String { rawValue }

    /// The method each route answers.
    public var method: String {
        switch self {
        case .health, .ready, .metrics, .idle, .models, .response: "GET"
        case .other: ""
        default: "POST"
        }
    }

    /// True for routes that need a client key.
    public var requiresAuth: Bool {
        switch self {
        case .health, .ready, .metrics, .idle, .other: false
        default: true
        }
    }

    /// Routes whose body is a `multipart/form-data` upload passed on to the upstream as it
    /// arrives (``FormUploadBody``), not read whole first.
    public var streamsRequestBody: Bool { self == .transcriptions || self == .translations }

    /// The head keeps `content-type` (the upload's boundary) only on these routes: any other
    /// request's is never read, so it costs nothing.
    public var keepsContentType: Bool { streamsRequestBody }

    /// Routes that name a stored response in their path rather than a model in a body.
    public var namesResponse: Bool { self == .response || self == .responseCancel }

    /// Longest response id a path or `previous_response_id` may carry (vLLM's are
    /// `resp_` and 32 hex digits).
    public static let maxResponseIDBytes = 256

    /// Matches a request path (query string and a trailing slash ignored).
    public init(path: String) {
        // Byte-wise over the path's contiguous UTF-8: it runs on every request.
        var path = path
        self = path.withUTF8 { bytes in
            let p = Self.pathPart(bytes)
            if let route = Self.paths.first(where: { $0.1.count == p.count && p.elementsEqual($0.1) })?.0 { return route }
            return Self.responseRoute(p) ?? .other
        }
    }

    /// The id in a ``namesResponse`` route's path (nil for any other path).
    public static func responseID(inPath path: String) -> String? {
        var path = path
        return path.withUTF8 { bytes in
            let p = pathPart(bytes)
            guard responseRoute(p) != nil else { return nil }
            return String(decoding: p[responsesPrefix.count...].prefix { $0 != UInt8(ascii: "/") }, as: UTF8.self)
        }
    }

    /// A target's path: what comes before its query or fragment, without one trailing slash.
    private static func pathPart(_ bytes: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        var end = bytes.firstIndex { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") } ?? bytes.count
        if end > 1, bytes[end - 1] == UInt8(ascii: "/") { end -= 1 }
        return UnsafeBufferPointer(rebasing: bytes[..<end])
    }

    /// `/v1/responses/{id}` or `/v1/responses/{id}/cancel` with a well-formed id.
    private static func responseRoute(_ p: UnsafeBufferPointer<UInt8>) -> Route? {
        guard p.count > responsesPrefix.count, p.starts(with: responsesPrefix) else { return nil }
        let rest = p[responsesPrefix.count...]
        let id = rest.prefix { $0 != UInt8(ascii: "/") }
        guard isResponseID(id) else { return nil }
        let tail = rest.dropFirst(id.count)
        if tail.isEmpty { return .response }
        return tail.elementsEqual(cancelSuffix) ? .responseCancel : nil
    }

    /// 1 to ``maxResponseIDBytes`` bytes of letters, digits, `_`, `-` and `.`.
    public static func isResponseID(_ id: some Collection<UInt8>) -> Bool {
        (1...maxResponseIDBytes).contains(id.count)
            && id.allSatisfy { byte in
                (byte | 0x20 >= UInt8(ascii: "a") && byte | 0x20 <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
            }
    }

    private static let responsesPrefix = Array("/v1/responses/".utf8)
    private static let cancelSuffix = Array("/cancel".utf8)

    /// Every route with a fixed path, with its path's bytes.
    private static let paths: [(Route, [UInt8])] = allCases.filter { $0 != .other && !$0.namesResponse }.map { ($0, Array($0.rawValue.utf8)) }
}
