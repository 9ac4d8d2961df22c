import Foundation
import Testing

@testable import Shared

@Suite("Tool request validator")
struct ToolRequestValidatorTests {
    /// A failing request body (the `{…}` around it is added) and the `param` it must name.
    struct Failure: Sendable, CustomTestStringConvertible {
        var body: String
        var param: String
        var code: String
        var testDescription: String { param + " ← " + body }
    }

    private static let weather =
        #"{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}"#
    private static let time =
        #"{"type": "function", "function": {"name": "get_time", "description": "Now.", "strict": true, "parameters": {"properties": {"tz": true}}}}"#

    private static func decode(_ body: String) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data("{\(body)}".utf8)) as? [String: Any])
    }

    private let hermes = ToolRequestValidator(parser: HermesToolCallParser())

    @Test("requests without tools pass")
    func withoutTools() throws {
        let summary = try hermes.validate(Self.decode(#""model": "m", "tools": null, "tool_choice": "auto""#))
        #expect(summary == ValidatedToolRequest(functionNames: [], toolChoice: .auto, parallelToolCalls: nil))
        #expect(try hermes.validate([:]).toolChoice == ValidatedToolRequest.ToolChoice.none)
        #expect(try !hermes.validate([:]).usesTools)
    }

    @Test("well-formed tools pass and are summarised")
    func wellFormed() throws {
        let auto = try hermes.validate(
            Self.decode(#""tools": [\#(Self.weather), \#(Self.time)], "parallel_tool_calls": false"#))
        #expect(
            auto
                == ValidatedToolRequest(
                    functionNames: ["get_weather", "get_time"], toolChoice: .auto, parallelToolCalls: false))
        #expect(auto.usesTools)
        let named = try hermes.validate(
            Self.decode(
                #""tools": [\#(Self.weather)], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}"#
            ))
        #expect(named.toolChoice == .function(name: "get_weather"))
        let none = try hermes.validate(Self.decode(#""tools": [\#(Self.weather)], "tool_choice": "none""#))
        #expect(!none.usesTools)
        let required = try hermes.validate(Self.decode(#""tools": [\#(Self.weather)], "tool_choice": "required""#))
        #expect(required.toolChoice == .required)
    }

    @Test("Swift-native values are accepted as well")
    func nativeValues() throws {
        let request: [String: Any] = [
            "tools": [
                ["type": "function", "function": ["name": "f", "strict": false, "parameters": [String: Any]()]]
            ],
            "parallel_tool_calls": true,
        ]
        #expect(
            try hermes.validate(request)
                == ValidatedToolRequest(functionNames: ["f"], toolChoice: .auto, parallelToolCalls: true))
        #expect(throws: ToolValidationError.self) { try hermes.validate(["parallel_tool_calls": 1]) }
    }

    static let failures: [Failure] = [
        .init(body: #""tools": {}"#, param: "tools", code: "invalid_type"),
        .init(body: #""tools": []"#, param: "tools", code: "invalid_value"),
        .init(body: #""tools": [1]"#, param: "tools[0]", code: "invalid_type"),
        .init(
            body: #""tools": [{"function": {"name": "f"}}]"#, param: "tools[0].type", code: "missing_required_parameter"
        ),
        .init(body: #""tools": [\#(weather), {"type": "retrieval"}]"#, param: "tools[1].type", code: "invalid_value"),
        .init(
            body: #""tools": [{"type": "function"}]"#, param: "tools[0].function", code: "missing_required_parameter"),
        .init(
            body: #""tools": [{"type": "function", "function": "f"}]"#, param: "tools[0].function", code: "invalid_type"
        ),
        .init(
            body: #""tools": [{"type": "function", "function": {}}]"#, param: "tools[0].function.name",
            code: "missing_required_parameter"),
        .init(
            body: #""tools": [{"type": "function", "function": {"name": 5}}]"#, param: "tools[0].function.name",
            code: "invalid_type"),
        .init(
            body: #""tools": [\#(weather), {"type": "function", "function": {"name": "get weather"}}]"#,
            param: "tools[1].function.name", code: "invalid_value"),
        .init(
            body: #""tools": [{"type": "function", "function": {"name": "\#(String(repeating: "a", count: 65))"}}]"#,
            param: "tools[0].function.name", code: "invalid_value"),
        .init(
            body: #""tools": [{"type": "function", "function": {"name": ""}}]"#, param: "tools[0].function.name",
            code: "invalid_value"),
        .init(
            body: #""tools": [\#(weather), \#(time), \#(weather)]"#, param: "tools[2].function.name",
            code: "invalid_value"),
        .init(
            body: #""tools": [{"type": "function", "function": {"name": "f", "description": 1}}]"#,
            param: "tools[0].function.description", code: "invalid_type"),
        .init(
            body: #""tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]"#,
            param: "tools[0].function.parameters", code: "invalid_type"),
        .init(
            body: #""tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]"#,
            param: "tools[0].function.parameters.type", code: "invalid_value"),
        .init(
            body: #""tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": []}}}]"#,
            param: "tools[0].function.parameters.properties", code: "invalid_type"),
        .init(
            body:
                #""tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": {"a": {}, "b": 1}}}}]"#,
            param: "tools[0].function.parameters.properties.b", code: "invalid_type"),
        .init(
            body: #""tools": [{"type": "function", "function": {"name": "f", "parameters": {"required": "a"}}}]"#,
            param: "tools[0].function.parameters.required", code: "invalid_type"),
        .init(
            body: #""tools": [{"type": "function", "function": {"name": "f", "strict": 1}}]"#,
            param: "tools[0].function.strict", code: "invalid_type"),
        .init(body: #""tools": [\#(weather)], "tool_choice": "any""#, param: "tool_choice", code: "invalid_value"),
        .init(body: #""tools": [\#(weather)], "tool_choice": 1"#, param: "tool_choice", code: "invalid_type"),
        .init(body: #""tools": [\#(weather)], "tool_choice": true"#, param: "tool_choice", code: "invalid_type"),
        .init(
            body: #""tools": [\#(weather)], "tool_choice": {"function": {"name": "get_weather"}}"#,
            param: "tool_choice.type", code: "missing_required_parameter"),
        .init(
            body: #""tools": [\#(weather)], "tool_choice": {"type": "tool", "function": {"name": "get_weather"}}"#,
            param: "tool_choice.type", code: "invalid_value"),
        .init(
            body: #""tools": [\#(weather)], "tool_choice": {"type": "function"}"#, param: "tool_choice.function",
            code: "missing_required_parameter"),
        .init(
            body: #""tools": [\#(weather)], "tool_choice": {"type": "function", "function": {}}"#,
            param: "tool_choice.function.name", code: "missing_required_parameter"),
        .init(
            body: #""tools": [\#(weather)], "tool_choice": {"type": "function", "function": {"name": "get_time"}}"#,
            param: "tool_choice.function.name", code: "invalid_value"),
        .init(body: #""tool_choice": "required""#, param: "tool_choice", code: "invalid_value"),
        .init(
            body: #""tool_choice": {"type": "function", "function": {"name": "f"}}"#, param: "tool_choice",
            code: "invalid_value"),
        .init(body: #""parallel_tool_calls": "yes""#, param: "parallel_tool_calls", code: "invalid_type"),
        .init(body: #""parallel_tool_calls": 0"#, param: "parallel_tool_calls", code: "invalid_type"),
    ]

    @Test("each failure names its param", arguments: failures)
    func failureNamesParam(_ failure: Failure) throws {
        let request = try Self.decode(failure.body)
        let error = try #require(throws: ToolValidationError.self) { try hermes.validate(request) }
        #expect(error.param == failure.param)
        #expect(error.code == failure.code)
        #expect(error.httpStatus == 400)
        #expect(error.message.contains(failure.param))
    }

    @Test("models whose parser is none refuse tools")
    func parserNone() throws {
        let validator = ToolRequestValidator(parser: NoToolCallParser())
        let error = try #require(throws: ToolValidationError.self) {
            try validator.validate(Self.decode(#""tools": [\#(Self.weather)]"#))
        }
        #expect(error.param == "tools")
        #expect(error.code == "tools_not_supported")
        #expect(error.message.contains("'none'"))
        #expect(
            try validator.validate(Self.decode(#""tool_choice": "none""#)).toolChoice
                == ValidatedToolRequest.ToolChoice.none)
    }

    @Test("the error body has OpenAI's shape")
    func errorBody() throws {
        let error = try #require(throws: ToolValidationError.self) { try hermes.validate(["tools": [Any]()]) }
        let body = try #require(JSONSerialization.jsonObject(with: Data(error.openAIErrorJSON.utf8)) as? [String: Any])
        let inner = try #require(body["error"] as? [String: Any])
        #expect(inner["type"] as? String == "invalid_request_error")
        #expect(inner["param"] as? String == "tools")
        #expect(inner["code"] as? String == "invalid_value")
        #expect(inner["message"] as? String == error.message)
    }
}
