import Testing

@testable import Shared

@Suite struct RouteTests {
    @Test func aPathMatchesItsRouteWithoutQueryFragmentOrOneTrailingSlash() {
        #expect(Route(path: "/health") == .health)
        #expect(Route(path: "/health?verbose=1") == .health)
        #expect(Route(path: "/v1/models/") == .models)
        #expect(Route(path: "/v1/chat/completions#x") == .chatCompletions)
        #expect(Route(path: "/v1/completions/?a=/") == .completions)
        #expect(Route(path: "/v1/embeddings") == .embeddings)
        #expect(Route(path: "/metrics") == .metrics)
        #expect(Route(path: "/ready") == .ready)
    }

    @Test func anythingElseIsOther() {
        for path in ["", "/", "other", "/other", "/v1/chat/completions//", "/HEALTH", "/v1", "/health/x", "/v1/modelsx", "/héalth"] {
            #expect(Route(path: path) == .other, "\(path)")
        }
    }

    @Test func everyAPIVLLMServesHasARouteOfAFamily() {
        let expected: [(String, Route, String)] = [
            ("/v1/responses", .responses, "responses"), ("/v1/messages", .messages, "anthropic"),
            ("/v1/messages/count_tokens", .messagesCountTokens, "anthropic"), ("/v1/rerank", .rerank, "openai"),
            ("/rerank", .rerankUnversioned, "openai"), ("/v2/rerank", .rerankV2, "openai"), ("/v1/score", .score, "openai"),
            ("/score", .scoreUnversioned, "openai"),
            ("/tokenize", .tokenize, "openai"), ("/detokenize", .detokenize, "openai"), ("/pooling", .pooling, "openai"),
            ("/classify", .classify, "openai"),
        ]
        for (path, route, family) in expected {
            #expect(Route(path: path) == route, "\(path)")
            #expect(route.family?.name == family && route.method == "POST" && route.requiresAuth)
        }
        #expect(Route.messages.family?.errorShape == .anthropic && Route.responses.family?.errorShape == .openAI)
        #expect(Route.chatCompletions.family?.asksForStreamUsage == true && Route.responses.family?.asksForStreamUsage == false)
    }

    @Test func aStoredResponseIsNamedInItsPathWithABoundedID() {
        #expect(Route(path: "/v1/responses/resp_0a1B-2.c") == .response)
        #expect(Route(path: "/v1/responses/resp_1/?x=1") == .response)
        #expect(Route(path: "/v1/responses/resp_1/cancel") == .responseCancel)
        #expect(Route.response.method == "GET" && Route.responseCancel.method == "POST" && Route.response.namesResponse)
        #expect(Route.response.template == "/v1/responses/{id}")
        #expect(Route.responseID(inPath: "/v1/responses/resp_1/cancel?a=b") == "resp_1")
        #expect(Route.responseID(inPath: "/v1/responses/resp_1") == "resp_1")
        #expect(Route.responseID(inPath: "/v1/chat/completions") == nil)
        let longest = String(repeating: "a", count: Route.maxResponseIDBytes)
        #expect(Route(path: "/v1/responses/" + longest) == .response)
        for path in [
            "/v1/responses//cancel", "/v1/responses/" + longest + "a", "/v1/responses/a b", "/v1/responses/a%2Fb",
            "/v1/responses/a/cancelx", "/v1/responses/a/b", "/v1/responses/é", "/v1/responses/a/cancel/x",
        ] {
            #expect(Route(path: path) == .other, "\(path)")
        }
    }
}
