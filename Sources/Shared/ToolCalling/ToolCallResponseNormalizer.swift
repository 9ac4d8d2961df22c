import Foundation

/// The HTTP-layer side of tool calling for `/v1/chat/completions`: pre-flight checks of a
/// request's tool fields, and turning a model's raw tool-call text (e.g. Hermes
/// `<tool_call>{…}</tool_call>`) in an upstream answer into OpenAI `tool_calls`.
///
/// Pure functions over bytes; the proxy calls them. Streamed answers go through a
/// ``ToolCallStreamNormalizer`` instead of ``normalizeCompletion(_:parser:)``.
public enum ToolCallResponseNormalizer {
    /// The request members the tool pre-flight looks at.
    static let toolMembers: Set<String> = ["tools", "tool_choice", "parallel_tool_calls"]

    /// Checks a chat-completion request's `tools`, `tool_choice` and `parallel_tool_calls`
    /// for a model whose `tool_parser` is `parserName`, before anything is sent upstream.
    ///
    /// Returns `nil` when the request has neither `tools` nor `tool_choice`, or when they are
    /// valid; otherwise a 400 naming the offending `param` (e.g. `tools[0].function.name`).
    /// A model whose parser is `none` (or unknown) refuses `tools` with `param` `tools`.
    /// Only the tool members are decoded, never the whole body.
    ///
    /// More than `maxTools` tools is refused before any is decoded (the count is one pass
    /// over the bytes), so the decode and the checks after it are bounded by the body cap
    /// and this count, never by what a client packs into a body.
    public static func preflight(
        body: OpenAIRequestBody, parserName: String, maxTools: Int = 128, registry: ToolCallParserRegistry = .standard
    ) -> GatewayError? {
        guard body.hasTools else { return nil }
        if let tools = body.members.first(where: { $0.key == "tools" }),
            let count = body.bytes.withUnsafeBytes({ JSONScanner.arrayCount($0, tools.value) }), count > maxTools
        {
            return .badRequest(
                "Too many tools: \(count); at most \(maxTools) may be declared in one request (MAX_TOOLS_PER_REQUEST).",
                param: "tools", code: "too_many_tools")
        }
        // The body was validated whole (`OpenAIRequestBody`): its members decode straight to
        // Swift values, in one pass and without Foundation's objects, and only as deep as the
        // checks look (`tools[i].function.parameters.properties`: each property's schema is
        // checked to be an object or a boolean, not read).
        var request: [String: Any] = [:]
        body.bytes.withUnsafeBytes { raw in
            for member in body.members where toolMembers.contains(member.key) {
                request[member.key] = JSONNativeDecoder.decode(raw, member.value, containerDepth: 4)
            }
        }
        let parser = registry.parser(named: parserName) ?? NoToolCallParser()
        do {
            _ = try ToolRequestValidator(parser: parser).validate(request)
            return nil
        } catch {
            if error.code == "tools_not_supported" {
                let model = body.model.map { "'\($0)' " } ?? ""
                return .badRequest(
                    "The model \(model)has no tool parser configured (tool_parser: \(parserName)), "
                        + "so it cannot be called with 'tools'. Remove 'tools', or set tool_parser for this "
                        + "model in the gateway configuration.",
                    param: "tools", code: error.code)
            }
            return .badRequest(error.message, param: error.param, code: error.code)
        }
    }

    /// The parser whose syntax the answer to `body` should be normalised with, or `nil` when
    /// the answer passes through untouched: the parser `parserName` supports tool calls and
    /// the request declares `tools` with a `tool_choice` other than `"none"` (as vLLM, which
    /// parses calls only for such requests). Cheap: reads only `tools` and `tool_choice`.
    public static func responseParser(
        body: OpenAIRequestBody, parserName: String, registry: ToolCallParserRegistry = .standard,
        idGenerator: ToolCallIDGenerator = .random
    ) -> (any ToolCallParser)? {
        guard let parser = registry.parser(named: parserName, idGenerator: idGenerator),
            type(of: parser).supportsToolCalls
        else { return nil }
        var declaresTools = false
        var choiceIsNone = false
        body.bytes.withUnsafeBytes { raw in
            for member in body.members {
                switch member.key {
                case "tools": declaresTools = raw[member.value.lowerBound] == UInt8(ascii: "[")
                case "tool_choice": choiceIsNone = JSONScanner.string(raw, member.value) == "none"
                default: break
                }
            }
        }
        return declaresTools && !choiceIsNone ? parser : nil
    }

    /// A non-streamed chat completion with raw tool-call text turned into `tool_calls`.
    ///
    /// For each choice whose `message.tool_calls` is absent or empty and whose
    /// `message.content` holds calls in `parser`'s syntax: `tool_calls` gets the parsed calls,
    /// `content` the remaining text (or `null`), `finish_reason` becomes `"tool_calls"`.
    /// Structured `tool_calls` from the upstream pass through. When no choice changes (or
    /// `json` is not a chat completion), `json` itself is returned: nothing is re-encoded.
    /// Otherwise only the `choices` value is re-encoded; every other member (`id`, `model`,
    /// `usage`, …) keeps its bytes.
    public static func normalizeCompletion(_ json: [UInt8], parser: any ToolCallParser) -> [UInt8] {
        guard let members = try? JSONScanner.objectMembers(json),
            let choicesMember = members.first(where: { $0.key == "choices" }),
            var choices = decodeValue(json[choicesMember.value]) as? [Any]
        else { return json }
        var changed = false
        for (position, element) in choices.enumerated() {
            guard var choice = element as? [String: Any],
                var message = choice["message"] as? [String: Any],
                let content = message["content"] as? String,
                isAbsentOrEmpty(message["tool_calls"])
            else { continue }
            let parsed = parser.parse(content)
            guard !parsed.toolCalls.isEmpty else { continue }
            message["tool_calls"] = parsed.toolCalls.map(toolCallObject)
            message["content"] = parsed.content ?? NSNull()
            choice["message"] = message
            choice["finish_reason"] = parsed.finishReason(replacing: choice["finish_reason"] as? String) ?? NSNull()
            choices[position] = choice
            changed = true
        }
        guard changed, let encoded = encode(choices) else { return json }
        return JSONSplice.apply([(choicesMember.value, encoded)], to: json)
    }

    // MARK: - JSON helpers shared with ToolCallStreamNormalizer

    /// `call` as OpenAI's `{"id","type":"function","function":{"name","arguments"}}`.
    static func toolCallObject(_ call: ToolCall) -> [String: Any] {
        [
            "id": call.id, "type": call.type,
            "function": ["name": call.function.name, "arguments": call.function.arguments] as [String: Any],
        ]
    }

    /// True for a missing value, JSON `null` or an empty array.
    static func isAbsentOrEmpty(_ value: Any?) -> Bool {
        guard let value, !(value is NSNull) else { return true }
        return (value as? [Any])?.isEmpty ?? false
    }

    /// One JSON value (any type, including a bare string) decoded with `JSONSerialization`.
    static func decodeValue(_ bytes: ArraySlice<UInt8>) -> Any? {
        try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
    }

    /// Compact JSON text with sorted keys and unescaped slashes; `nil` if not encodable.
    static func encode(_ value: Any) -> [UInt8]? {
        guard JSONSerialization.isValidJSONObject(value),
            let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return nil }
        return Array(data)
    }
}
