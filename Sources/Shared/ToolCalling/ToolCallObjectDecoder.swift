/// Turns a JSON tool-call object written by a model into an ``ExtractedToolCall``.
///
/// Accepted shapes (extra members such as `"type"` or `"id"` are ignored):
/// - `{"name": N, "arguments": A}` or `{"name": N, "parameters": A}` (Llama 3 writes `parameters`);
/// - `{"function": {"name": N, "arguments": A}}`, the OpenAI shape some models echo.
///
/// `N` must be a valid function name (``ToolFunctionName``). `A` may be an object, a string
/// holding a JSON object (re-parsed), `null`, or absent (both meaning `{}`). Anything else,
/// and a repeated `name`/`arguments`/`parameters` member, means the object is not a call.
enum ToolCallObjectDecoder {
    /// The call `value` describes, or `nil` when it is not a well-formed call.
    static func decodeCall(_ value: ToolCallJSONValue) -> ExtractedToolCall? {
        if value["name"] == nil, value.count(of: "function") == 1, let function = value["function"] {
            return decodeCall(function)
        }
        guard value.count(of: "name") == 1, case .string(let name)? = value["name"], ToolFunctionName.isValid(name)
        else {
            return nil
        }
        let argumentKeys = ["arguments", "parameters"].filter { value.count(of: $0) > 0 }
        guard argumentKeys.count <= 1 else { return nil }
        guard let key = argumentKeys.first else { return ExtractedToolCall(name: name, arguments: "{}") }
        guard value.count(of: key) == 1, let arguments = decodeArguments(value[key]) else { return nil }
        return ExtractedToolCall(name: name, arguments: arguments)
    }

    /// Every element of a JSON array as a call, or `nil` unless the array is non-empty and
    /// every element is a call.
    static func decodeCallList(_ value: ToolCallJSONValue) -> [ExtractedToolCall]? {
        guard case .array(let elements) = value, !elements.isEmpty else { return nil }
        var calls: [ExtractedToolCall] = []
        for element in elements {
            guard let call = decodeCall(element) else { return nil }
            calls.append(call)
        }
        return calls
    }

    /// Compact arguments text for an arguments value, or `nil` when it is not an object.
    static func decodeArguments(_ value: ToolCallJSONValue?) -> String? {
        switch value {
        case nil, .null?:
            return "{}"
        case .object?:
            return value?.serialized
        case .string(let text)?:
            guard let inner = ToolCallJSONParser.parse(text), case .object = inner else { return nil }
            return inner.serialized
        default:
            return nil
        }
    }
}
