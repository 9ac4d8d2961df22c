import Testing

@testable import Shared

/// The API-family seam: usage, errors and the end of a stream as each family writes them.
@Suite struct APIFamilyTests {
    @Test func everyProxiedRouteHasAFamilyAndTheGatewaysOwnHaveNone() {
        for route in Route.allCases {
            let proxied = route.requiresAuth && route != .models
            #expect((route.family != nil) == proxied, "\(route)")
        }
    }

    @Test func usageIsReadWithTheFamilysKeys() {
        let openAI = Array(#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#.utf8)
        let anthropic = Array(#"{"type":"message_delta","usage":{"input_tokens":5,"output_tokens":6}}"#.utf8)
        #expect(TokenUsage.find(in: openAI, keys: APIFamily.openAI.usage) == TokenUsage(prompt: 3, completion: 4))
        #expect(TokenUsage.find(in: anthropic, keys: APIFamily.anthropic.usage) == TokenUsage(prompt: 5, completion: 6))
        #expect(TokenUsage.find(in: anthropic, keys: APIFamily.openAI.usage) == TokenUsage(prompt: 0, completion: 0))
    }

    @Test func errorsTakeTheFamilysShape() {
        let error = GatewayError.rateLimited("Slow down.", retryAfterSeconds: 3)
        #expect(APIFamily.openAI.body(of: error) == error.jsonBody)
        #expect(APIFamily.anthropic.body(of: error) == #"{"type":"error","error":{"type":"rate_limit_error","message":"Slow down."}}"#)
        #expect(GatewayError.unauthorized().anthropicType == "authentication_error")
        #expect(GatewayError.unavailable("x", retryAfterSeconds: 1).anthropicType == "overloaded_error")
        #expect(GatewayError.payloadTooLarge(limit: 1).anthropicType == "request_too_large")
    }

    @Test func aStreamEndsEarlyInTheFamilysFraming() {
        let error = GatewayError.badGateway("Broke off.")
        #expect(APIFamily.openAI.streamError(error) == "data: \(error.jsonBody)\n\ndata: [DONE]\n\n")
        #expect(APIFamily.anthropic.streamError(error).hasPrefix("event: error\ndata: {\"type\":\"error\""))
        #expect(APIFamily.anthropic.streamError(error).hasSuffix("\n\n"))
    }
}
