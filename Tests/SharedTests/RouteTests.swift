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
}
