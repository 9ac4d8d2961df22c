import Foundation

/// Pre-flight checks of a chat-completion request's tool fields, before it reaches vLLM.
///
/// Input is the request body decoded by `JSONSerialization.jsonObject(with:)` as
/// `[String: Any]` (Swift-native values, as in tests, work too). JSON `null` counts as
/// absent. Checked, in order:
/// - `tools`: a non-empty array, allowed only when the model's parser is not `none`; each
///   element `{"type": "function", "function": {…}}` with a `name` matching
///   `^[a-zA-Z0-9_-]{1,64}$` and unique, an optional string `description`, optional
///   `parameters` that is a JSON-Schema object (`type` `"object"` if given, `properties` an
///   object of schemas, `required` an array of strings) and an optional boolean `strict`;
/// - `tool_choice`: `"none"`, `"auto"`, `"required"` or
///   `{"type": "function", "function": {"name": X}}` with `X` declared; `"required"` and the
///   object form need `tools` (`"none"` and `"auto"` alone are harmless and allowed);
/// - `parallel_tool_calls`: a boolean.
///
/// The first failure is thrown as a ``ToolValidationError`` naming its `param`.
public struct ToolRequestValidator: Sendable {
    /// The configured `tool_parser` name of the model the request is for.
    public let parserName: String
    /// Whether that parser supports tools (`false` for `none`).
    public let supportsToolCalls: Bool

    /// Creates a validator for a model using `parser`.
    public init(parser: any ToolCallParser) {
        self.parserName = parser.name
        self.supportsToolCalls = type(of: parser).supportsToolCalls
    }

    /// Validates `request` and summarises its tool fields.
    public func validate(_ request: [String: Any]) throws(ToolValidationError) -> ValidatedToolRequest {
        let functionNames = try validateTools(Self.present(request["tools"]))
        let choice = try validateToolChoice(Self.present(request["tool_choice"]), declared: functionNames)
        var parallelToolCalls: Bool?
        if let value = Self.present(request["parallel_tool_calls"]) {
            guard let flag = Self.bool(value) else { throw .invalidType("parallel_tool_calls", expected: "a boolean") }
            parallelToolCalls = flag
        }
        return ValidatedToolRequest(
            functionNames: functionNames ?? [],
            toolChoice: choice ?? (functionNames == nil ? ValidatedToolRequest.ToolChoice.none : .auto),
            parallelToolCalls: parallelToolCalls
        )
    }

    /// The declared names, or `nil` without `tools`.
    private func validateTools(_ value: Any?) throws(ToolValidationError) -> [String]? {
        guard let value else { return nil }
        guard let tools = value as? [Any] else { throw .invalidType("tools", expected: "an array") }
        guard !tools.isEmpty else { throw .invalidValue("tools", "expected at least one tool.") }
        guard supportsToolCalls else { throw .toolsNotSupported(parser: parserName) }
        var names: [String] = []
        var seen = Set<String>(minimumCapacity: tools.count)
        for (index, tool) in tools.enumerated() {
            let name = try validateTool(tool, param: "tools[\(index)]")
            guard seen.insert(name).inserted else {
                throw .invalidValue("tools[\(index)].function.name", "duplicate function name '\(name)'.")
            }
            names.append(name)
        }
        return names
    }

    private func validateTool(_ value: Any, param: String) throws(ToolValidationError) -> String {
        guard let tool = value as? [String: Any] else { throw .invalidType(param, expected: "an object") }
        guard let type = Self.present(tool["type"]) else { throw .missing("\(param).type") }
        guard let typeName = Self.string(type) else { throw .invalidType("\(param).type", expected: "a string") }
        guard typeName == "function" else {
            throw .invalidValue("\(param).type", "expected 'function', got '\(typeName)'.")
        }
        guard let functionValue = Self.present(tool["function"]) else { throw .missing("\(param).function") }
        guard let function = functionValue as? [String: Any] else {
            throw .invalidType("\(param).function", expected: "an object")
        }
        let name = try validateName(function["name"], param: "\(param).function.name")
        if let description = Self.present(function["description"]), Self.string(description) == nil {
            throw .invalidType("\(param).function.description", expected: "a string")
        }
        if let parameters = Self.present(function["parameters"]) {
            try validateParametersSchema(parameters, param: "\(param).function.parameters")
        }
        if let strict = Self.present(function["strict"]), Self.bool(strict) == nil {
            throw .invalidType("\(param).function.strict", expected: "a boolean")
        }
        return name
    }

    private func validateName(_ value: Any?, param: String) throws(ToolValidationError) -> String {
        guard let value = Self.present(value) else { throw .missing(param) }
        guard let name = Self.string(value) else { throw .invalidType(param, expected: "a string") }
        guard ToolFunctionName.isValid(name) else {
            throw .invalidValue(param, "'\(name)' does not match '^[a-zA-Z0-9_-]{1,64}$'.")
        }
        return name
    }

    private func validateParametersSchema(_ value: Any, param: String) throws(ToolValidationError) {
        guard let schema = value as? [String: Any] else { throw .invalidType(param, expected: "a JSON Schema object") }
        if let type = Self.present(schema["type"]), Self.string(type) != "object" {
            throw .invalidValue("\(param).type", "the parameters schema must have type 'object'.")
        }
        if let propertiesValue = Self.present(schema["properties"]) {
            guard let properties = propertiesValue as? [String: Any] else {
                throw .invalidType("\(param).properties", expected: "an object")
            }
            // The first bad property by name (the same one every time), without sorting them all.
            var firstBad: String?
            for (key, property) in properties where !(property is [String: Any]) && Self.bool(property) == nil {
                if firstBad.map({ key < $0 }) ?? true { firstBad = key }
            }
            if let key = firstBad {
                throw .invalidType("\(param).properties.\(key)", expected: "a JSON Schema (object or boolean)")
            }
        }
        if let requiredValue = Self.present(schema["required"]) {
            guard let required = requiredValue as? [Any], required.allSatisfy({ Self.string($0) != nil }) else {
                throw .invalidType("\(param).required", expected: "an array of strings")
            }
        }
    }

    private func validateToolChoice(_ value: Any?, declared: [String]?) throws(ToolValidationError)
        -> ValidatedToolRequest.ToolChoice?
    {
        guard let value else { return nil }
        if let mode = Self.string(value) {
            switch mode {
            case "none": return ValidatedToolRequest.ToolChoice.none
            case "auto": return .auto
            case "required":
                guard declared != nil else {
                    throw .invalidValue("tool_choice", "'required' is only allowed when 'tools' are specified.")
                }
                return .required
            default:
                throw .invalidValue(
                    "tool_choice", "expected 'none', 'auto', 'required' or a function object, got '\(mode)'.")
            }
        }
        guard let choice = value as? [String: Any] else {
            throw .invalidType("tool_choice", expected: "a string or an object")
        }
        guard let type = Self.present(choice["type"]) else { throw .missing("tool_choice.type") }
        guard Self.string(type) == "function" else { throw .invalidValue("tool_choice.type", "expected 'function'.") }
        guard let functionValue = Self.present(choice["function"]) else { throw .missing("tool_choice.function") }
        guard let function = functionValue as? [String: Any] else {
            throw .invalidType("tool_choice.function", expected: "an object")
        }
        let name = try validateName(function["name"], param: "tool_choice.function.name")
        guard let declared else {
            throw .invalidValue("tool_choice", "a function choice is only allowed when 'tools' are specified.")
        }
        guard declared.contains(name) else {
            throw .invalidValue("tool_choice.function.name", "no function named '\(name)' is declared in 'tools'.")
        }
        return .function(name: name)
    }

    /// `value` unless it is absent or JSON `null`. Compared by type: `value is NSNull` bridges
    /// a Swift dictionary or array to Foundation, whole and at every level it is asked at
    /// (670 ms of event loop for 770 KB of tool schemas).
    private static func present(_ value: Any?) -> Any? {
        guard let value, type(of: value) != NSNull.self else { return nil }
        return value
    }

    private static func string(_ value: Any) -> String? {
        value as? String
    }

    /// A JSON boolean; `JSONSerialization`'s numbers bridge to `Bool` too, so check the type.
    private static func bool(_ value: Any) -> Bool? {
        guard let number = value as? NSNumber, String(cString: number.objCType) == "c" else { return nil }
        return number.boolValue
    }
}
