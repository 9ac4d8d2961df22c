/// A client's JSON request body, validated once, with the top-level fields the gateway
/// acts on located by byte range so the body can be forwarded with only `model` (and,
/// when needed, `stream_options`) changed — never decoded and re-encoded.
public struct OpenAIRequestBody: Sendable {
    /// The body as received.
    public let bytes: [UInt8]
    /// Top-level members in order.
    public let members: [JSONScanner.Member]
    /// `model`, decoded.
    public let model: String?
    /// `stream: true` (any value but a boolean or null is refused).
    public let stream: Bool
    /// `stream_options.include_usage: true`.
    public let includeUsage: Bool

    /// Validates `bytes`.
    /// - Throws: ``GatewayError`` 400 naming the problem.
    public init(bytes: [UInt8]) throws {
        let scanned: [JSONScanner.Member]
        do {
            scanned = try JSONScanner.objectMembers(bytes)
        } catch let failure as JSONScanner.Failure {
            throw GatewayError.badRequest("Invalid JSON body: \(failure.message) (at byte \(failure.offset)).", code: "invalid_json")
        }
        var model: String?
        var stream = false
        var includeUsage = false
        try bytes.withUnsafeBytes { raw in
            for member in scanned {
                switch member.key {
                case "model":
                    guard let name = JSONScanner.string(raw, member.value) else {
                        throw GatewayError.badRequest("'model' must be a string.", param: "model")
                    }
                    model = name
                case "stream":
                    // vLLM (pydantic, lax) streams for "true", 1, "yes"…: a value the gateway
                    // would read differently is refused rather than guessed at.
                    guard let flag = Self.boolean(raw, member.value) else {
                        throw GatewayError.badRequest("'stream' must be a boolean (true or false).", param: "stream", code: "invalid_type")
                    }
                    stream = flag
                case "stream_options":
                    if raw[member.value.lowerBound] == UInt8(ascii: "{"),
                        let inner = try? JSONScanner.objectMembers(raw, range: member.value),
                        let usage = inner.first(where: { $0.key == "include_usage" })
                    {
                        includeUsage = Self.isTrue(raw, usage.value)
                    }
                default:
                    break
                }
            }
        }
        self.bytes = bytes
        self.members = scanned
        self.model = model
        self.stream = stream
        self.includeUsage = includeUsage
    }

    /// No body (`GET /v1/responses/{id}`): forwarded as nothing.
    public static let empty = OpenAIRequestBody()

    private init() {
        bytes = []
        members = []
        model = nil
        stream = false
        includeUsage = false
    }

    /// `previous_response_id` (the Responses API): nil when absent or null.
    /// - Throws: ``GatewayError`` 400 when it is not a string of 1 to
    ///   ``Route/maxResponseIDBytes`` letters, digits, `_`, `-` or `.`.
    public func previousResponseID() throws(GatewayError) -> String? {
        guard let member = members.first(where: { $0.key == "previous_response_id" }) else { return nil }
        let id = bytes.withUnsafeBytes { raw -> String?? in
            if raw[member.value.lowerBound] == UInt8(ascii: "n") { return .some(nil) }  // null
            return JSONScanner.string(raw, member.value).map { Optional($0) }
        }
        guard let id else {
            throw .badRequest("'previous_response_id' must be a string.", param: "previous_response_id", code: "invalid_type")
        }
        guard let id else { return nil }
        guard Route.isResponseID(id.utf8) else {
            throw .badRequest(
                "'previous_response_id' must be 1 to \(Route.maxResponseIDBytes) letters, digits, '_', '-' or '.'.",
                param: "previous_response_id", code: "invalid_value")
        }
        return id
    }

    /// Where the prompt is in ``bytes``: the JSON text of `messages` (chat), `prompt`
    /// (completions) or `input` (responses, embeddings), as the client sent it. Routing cuts
    /// it into ``PromptBlocks``: a conversation that grows keeps its earlier turns' bytes.
    public var promptRange: Range<Int>? {
        members.first { $0.key == "messages" || $0.key == "prompt" || $0.key == "input" }?.value
    }

    /// True when the request carries `tools` or `tool_choice`.
    public var hasTools: Bool { members.contains { $0.key == "tools" || $0.key == "tool_choice" } }

    /// The body with `model` set to `name` and, when `addIncludeUsage`, usage requested in
    /// the stream (`stream_options.include_usage: true`, replacing the client's options).
    public func forwarding(model name: String, addIncludeUsage: Bool = false) -> [UInt8] {
        var replacements: [(Range<Int>, [UInt8])] = []
        if let member = members.first(where: { $0.key == "model" }), model != name {
            replacements.append((member.value, Array(JSON.quoted(name).utf8)))
        }
        if addIncludeUsage && !includeUsage {
            let options = Array(#"{"include_usage":true}"#.utf8)
            if let member = members.first(where: { $0.key == "stream_options" }) {
                replacements.append((member.value, options))
            } else if let close = bytes.lastIndex(of: UInt8(ascii: "}")) {
                replacements.append((close..<close, Array(#","stream_options":"#.utf8) + options))
            }
        }
        return JSONSplice.apply(replacements, to: bytes)
    }

    /// `true` or `false`; `null` reads as false; nil for anything else.
    static func boolean(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool? {
        switch (range.count, raw[range.lowerBound]) {
        case (4, UInt8(ascii: "t")): true
        case (5, UInt8(ascii: "f")), (4, UInt8(ascii: "n")): false
        default: nil
        }
    }

    static func isTrue(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
        range.count == 4 && raw[range.lowerBound] == UInt8(ascii: "t")
    }
}

/// Byte-range replacement in a JSON text.
public enum JSONSplice {
    /// `bytes` with each range replaced (ranges must not overlap).
    public static func apply(_ replacements: [(Range<Int>, [UInt8])], to bytes: [UInt8]) -> [UInt8] {
        if replacements.isEmpty { return bytes }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 64)
        var cursor = 0
        for (range, value) in replacements.sorted(by: { $0.0.lowerBound < $1.0.lowerBound }) {
            out.append(contentsOf: bytes[cursor..<range.lowerBound])
            out.append(contentsOf: value)
            cursor = range.upperBound
        }
        out.append(contentsOf: bytes[cursor...])
        return out
    }

    /// `json` (an object) with its top-level `model` value set to `name`; unchanged when it
    /// has none or is not valid JSON.
    public static func replacingModel(in json: [UInt8], with name: String, container: String? = nil) -> [UInt8] {
        json.withUnsafeBytes { raw in
            guard let members = try? JSONScanner.objectMembers(raw) else { return json }
            var model = members.first(where: { $0.key == "model" })
            // A stream event's model may sit one object down (`response`, `message`).
            if model == nil, let container, let outer = members.first(where: { $0.key == container }),
                raw[outer.value.lowerBound] == UInt8(ascii: "{"), let inner = try? JSONScanner.objectMembers(raw, range: outer.value)
            {
                model = inner.first(where: { $0.key == "model" })
            }
            guard let model else { return json }
            return apply([(model.value, Array(JSON.quoted(name).utf8))], to: json)
        }
    }
}
