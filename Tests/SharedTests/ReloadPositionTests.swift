import Testing

@testable import Shared

@Suite struct ReloadPositionTests {
    func config(_ upstreams: [String], models: [String]) -> GatewayConfiguration {
        var c = GatewayConfiguration()
        c.upstreams = upstreams.map { .init(name: $0, url: "http://127.0.0.1:1") }
        c.models = models.map { .init(name: $0, upstreams: [upstreams[0]]) }
        c.metricModels = c.models.map(\.name)
        return c
    }

    @Test func upstreamsKeepTheirPositionsAndModelLabelsOnlyGrow() throws {
        let running = config(["b", "c"], models: ["qwen"])
        let fresh = config(["a", "c", "d"], models: ["a-model", "qwen"])
        let reloaded = try fresh.keepingPositions(of: running)
        #expect(reloaded.upstreams.map(\.name) == ["b", "c", "a", "d"])
        #expect(reloaded.upstreams.map(\.retired) == [true, false, false, false])
        #expect(reloaded.metricModels == ["qwen", "a-model"])
        let again = try config(["b"], models: ["qwen"]).keepingPositions(of: reloaded)
        #expect(again.upstreams.map(\.name) == ["b", "c", "a", "d"])
        #expect(again.upstreams.map(\.retired) == [false, true, true, true])
        #expect(again.metricModels == ["qwen", "a-model"])
    }

    @Test func tooManyUpstreamsOverTimeRefusesTheReload() {
        let running = config((0..<16).map { "u\($0)" }, models: [])
        #expect(throws: ConfigurationError.self) { try config(["new"], models: []).keepingPositions(of: running) }
    }
}
