import Crypto
import Foundation
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

    @Test func aConnectionsRememberedCredentialStandsForTheSameHeaderOnly() {
        var configuration = GatewayConfiguration()
        configuration.auth.bearerToken = "sk-right"
        let other = SHA256.hash(data: Array("sk-other".utf8)).map { String(format: "%02x", $0) }.joined()
        configuration.auth.keys = [.init(name: "team-b", sha256: other)]
        let authenticator = Authenticator(configuration: configuration)
        var memo: RememberedCredential?

        #expect(authenticator.authenticate(authorization: "Bearer sk-wrong", remembering: &memo) == nil)
        #expect(memo == nil, "a header that did not authenticate is not remembered")
        #expect(authenticator.authenticate(authorization: "Bearer sk-right", remembering: &memo)?.name == "default")
        #expect(memo?.identity.name == "default")
        // Same length, one byte different: not the remembered header, and not a key.
        #expect(authenticator.authenticate(authorization: "Bearer sk-righT", remembering: &memo) == nil)
        #expect(authenticator.authenticate(authorization: nil, remembering: &memo) == nil)
        #expect(memo?.identity.name == "default", "a refused request leaves the connection's credential as it was")
        #expect(authenticator.authenticate(authorization: "Bearer sk-other", remembering: &memo)?.name == "team-b")
        #expect(authenticator.authenticate(authorization: "Bearer sk-right", remembering: &memo)?.name == "default")

        // The remembered identity is what the same header gets, without a digest: shown
        // with a credential no key matches.
        var planted: RememberedCredential? = RememberedCredential(
            authorization: "Bearer sk-planted",
            identity: ClientIdentity(name: "planted", keyID: 7, models: nil, requestsPerMinute: 1, tokensPerMinute: 0))
        #expect(authenticator.authenticate(authorization: "Bearer sk-planted", remembering: &planted)?.name == "planted")
        #expect(authenticator.authenticate(authorization: "Bearer sk-plantex", remembering: &planted) == nil)
    }
}
