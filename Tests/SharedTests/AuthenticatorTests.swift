import Testing

@testable import Shared

@Suite struct AuthenticatorTests {
    @Test func theBearerTokenIsTheTrimmedRestAfterTheScheme() {
        #expect(Authenticator.bearerToken("Bearer sk-1") == "sk-1")
        #expect(Authenticator.bearerToken("bearer sk-1") == "sk-1")
        #expect(Authenticator.bearerToken("BeArEr   sk-1  ") == "sk-1")
        #expect(Authenticator.bearerToken("Bearer \tsk-1\t ") == "sk-1")
        #expect(Authenticator.bearerToken("  Bearer sk 1") == "sk 1")
        #expect(Authenticator.bearerToken("Bearer") == nil)
        #expect(Authenticator.bearerToken("Bearer    ") == nil)
        #expect(Authenticator.bearerToken("Basic c2stMQ==") == nil)
        #expect(Authenticator.bearerToken("Bearersk-1") == nil)
        #expect(Authenticator.bearerToken("Bearer\tsk-1") == nil, "the scheme ends at a space")
        #expect(Authenticator.bearerToken("Béarer sk-1") == nil)
        #expect(Authenticator.bearerToken("") == nil)
    }

    @Test func onlyAConfiguredKeyAuthenticates() {
        var configuration = GatewayConfiguration()
        configuration.auth.bearerToken = "sk-right"
        let authenticator = Authenticator(configuration: configuration)
        #expect(authenticator.authenticate(authorization: "Bearer sk-right")?.name == "default")
        #expect(authenticator.authenticate(authorization: "bearer  sk-right ")?.name == "default")
        #expect(authenticator.authenticate(authorization: "Bearer sk-wrong") == nil)
        #expect(authenticator.authenticate(authorization: "sk-right") == nil)
        #expect(authenticator.authenticate(authorization: nil) == nil)
    }
}
