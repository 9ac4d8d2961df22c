import Testing

@testable import Shared

/// `stream` is a boolean or nothing: vLLM streams for `"true"`, `1`, `"yes"`, and a gateway
/// that read those as false would not account the stream (issue 20, finding 2).
@Suite struct OpenAIRequestBodyTests {
    func body(_ json: String) throws -> OpenAIRequestBody { try OpenAIRequestBody(bytes: Array(json.utf8)) }

    @Test(arguments: [#""true""#, "1", #""1""#, #""yes""#, #""on""#, #""True""#, "0", "[]", "{}", #""false""#])
    func aStreamThatIsNotABooleanIsRefused(value: String) {
        #expect(throws: GatewayError.badRequest("'stream' must be a boolean (true or false).", param: "stream", code: "invalid_type")) {
            _ = try body(#"{"model":"m","stream":\#(value)}"#)
        }
    }

    @Test func booleansAndNullAreRead() throws {
        #expect(try body(#"{"model":"m","stream":true}"#).stream)
        #expect(try !body(#"{"model":"m","stream":false}"#).stream)
        #expect(try !body(#"{"model":"m","stream":null}"#).stream)
        #expect(try !body(#"{"model":"m"}"#).stream)
    }
}
