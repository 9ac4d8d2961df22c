import Testing

@testable import Shared
@testable import Supervisor

/// `--help` names every setting the loader reads and says where each may be set, checked
/// against the loader's own table (``GatewayConfiguration/settings``).
@Suite struct LLMGatewayHelpTests {
    @Test func everySettingWithoutAFlagIsNamed() {
        for setting in GatewayConfiguration.settings.values where setting.flag == nil {
            #expect(LLMGateway.discussion.contains(setting.env), "--help does not name \(setting.env)")
        }
    }

    @Test func theFileKeysOfFlagSettingsAreNamed() {
        for setting in GatewayConfiguration.settings.values {
            guard setting.flag != nil, let fileKey = setting.fileKey else { continue }
            #expect(LLMGateway.discussion.contains(fileKey), "--help does not say the config file takes \(fileKey)")
        }
    }

    /// What the help says of the settings with no flag: only BEARER_TOKEN stays out of the
    /// config file, and the others' file keys are their names in lower case.
    @Test func onlyTheBearerTokenIsKeptOutOfTheFile() {
        let flagless = GatewayConfiguration.settings.values.filter { $0.flag == nil }
        #expect(flagless.filter { $0.fileKey == nil }.map(\.env) == ["BEARER_TOKEN"])
        #expect(LLMGateway.discussion.contains("BEARER_TOKEN only in the environment or .env"))
        for setting in flagless {
            guard let fileKey = setting.fileKey else { continue }
            #expect(fileKey == setting.env.lowercased())
        }
    }
}
