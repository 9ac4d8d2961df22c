/// Why a request's `tools`, `tool_choice` or `parallel_tool_calls` was refused before it
/// reached the upstream. Always an HTTP 400 `invalid_request_error` in OpenAI's shape,
/// naming the offending ``param`` (e.g. `tools[1].function.name`).
public struct ToolValidationError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Kind: Sendable, Hashable {
        case missing
        case invalidType
        case invalidValue
        case toolsNotSupported
    }

    private let kind: Kind
    /// A human-readable explanation for the client.
    public let message: String
    /// The request parameter at fault, as a path such as `tools[0].function.parameters`.
    public let param: String

    private init(_ kind: Kind, param: String, message: String) {
        self.kind = kind
        self.param = param
        self.message = message
    }

    /// The parameter is required here but absent.
    static func missing(_ param: String) -> ToolValidationError {
        ToolValidationError(.missing, param: param, message: "Missing required parameter: '\(param)'.")
    }

    /// The parameter has the wrong JSON type.
    static func invalidType(_ param: String, expected: String) -> ToolValidationError {
        ToolValidationError(.invalidType, param: param, message: "Invalid type for '\(param)': expected \(expected).")
    }

    /// The parameter has the right type but an unacceptable value.
    static func invalidValue(_ param: String, _ reason: String) -> ToolValidationError {
        ToolValidationError(.invalidValue, param: param, message: "Invalid value for '\(param)': \(reason)")
    }

    /// The model's `tool_parser` is `none`.
    static func toolsNotSupported(parser: String) -> ToolValidationError {
        ToolValidationError(
            .toolsNotSupported,
            param: "tools",
            message: "This model does not support tool calling (its tool_parser is '\(parser)'); remove 'tools'."
        )
    }

    /// The HTTP status to answer with: always 400.
    public var httpStatus: Int { 400 }

    /// OpenAI's error `type`: always `invalid_request_error`.
    public var type: String { "invalid_request_error" }

    /// OpenAI's error `code`: `missing_required_parameter`, `invalid_type`, `invalid_value`
    /// or `tools_not_supported`.
    public var code: String {
        switch kind {
        case .missing: "missing_required_parameter"
        case .invalidType: "invalid_type"
        case .invalidValue: "invalid_value"
        case .toolsNotSupported: "tools_not_supported"
        }
    }

    /// The response body: `{"error":{"message":…,"type":…,"param":…,"code":…}}`.
    public var openAIErrorJSON: String {
        let error: [ToolCallJSONValue.Member] = [
            .init(key: "message", value: .string(message)),
            .init(key: "type", value: .string(type)),
            .init(key: "param", value: .string(param)),
            .init(key: "code", value: .string(code)),
        ]
        return ToolCallJSONValue.object([.init(key: "error", value: .object(error))]).serialized
    }

    /// `param: message`.
    public var description: String { "\(param): \(message)" }
}
