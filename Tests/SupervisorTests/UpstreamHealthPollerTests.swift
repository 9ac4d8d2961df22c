import Foundation
import Shared
import Testing

@testable import Supervisor

/// The health check's timeouts come from the upstream's configuration (see
/// ``UpstreamHealthPoller/Timeouts``).
@Suite struct UpstreamHealthPollerTests {
    typealias Timeouts = UpstreamHealthPoller.Timeouts

    let upstream = GatewayConfiguration.Upstream(name: "vllm-a", url: "http://127.0.0.1:18000")

    @Test func withNothingSetTheDefaultsApply() {
        let configuration = GatewayConfiguration()
        // UPSTREAM_CONNECT_TIMEOUT 5 s; UPSTREAM_TIMEOUT 300 s bounded by the 2 s interval.
        #expect(Timeouts(upstream: upstream, configuration: configuration) == Timeouts(connect: 5, read: 2))
    }

    @Test func theUpstreamsOwnConnectTimeoutWins() {
        var configuration = GatewayConfiguration()
        configuration.server.upstreamConnectTimeout = 7
        var upstream = upstream
        #expect(Timeouts(upstream: upstream, configuration: configuration).connect == 7)
        upstream.connectTimeout = 0.5
        #expect(Timeouts(upstream: upstream, configuration: configuration).connect == 0.5)
    }

    @Test func readIsTheUpstreamsTimeoutAtMostOnePollInterval() {
        var configuration = GatewayConfiguration()
        configuration.server.healthInterval = 10
        var upstream = upstream
        #expect(Timeouts(upstream: upstream, configuration: configuration).read == 10)
        configuration.server.upstreamTimeout = 4
        #expect(Timeouts(upstream: upstream, configuration: configuration).read == 4)
        upstream.timeout = 0.5
        #expect(Timeouts(upstream: upstream, configuration: configuration).read == 0.5)
    }

    @Test func aShortIntervalDoesNotPushReadBelowTheFloor() {
        var configuration = GatewayConfiguration()
        configuration.server.healthInterval = 0.1
        var upstream = upstream
        #expect(Timeouts(upstream: upstream, configuration: configuration).read == Timeouts.minimumRead)
        upstream.timeout = 0.3  // a shorter timeout of the upstream's own still wins
        #expect(Timeouts(upstream: upstream, configuration: configuration).read == 0.3)
    }

    @Test func theDeadlineForAResponseHeadIsConnectPlusRead() {
        let timeouts = Timeouts(connect: 1.5, read: 2)
        #expect(timeouts.connectAmount.nanoseconds == 1_500_000_000)
        #expect(timeouts.readAmount.nanoseconds == 2_000_000_000)
        #expect(timeouts.deadline.nanoseconds == 3_500_000_000)
    }

    @Test func aModelWithAParentIsALoRAAdapterAndTheWorkersSeeIt() throws {
        let body = """
            {"object":"list","data":[
              {"id":"base","object":"model","root":"/models/base","parent":null},
              {"id":"sql-lora","object":"model","root":"/adapters/sql","parent":"base"},
              {"object":"model"}, {"id":7}
            ]}
            """
        let models = try #require(UpstreamHealthPoller.servedModels(Data(body.utf8)))
        #expect(models == [.init("base"), .init("sql-lora", parent: "base")])
        #expect(UpstreamHealthPoller.servedModels(Data("[1,2]".utf8)) == nil)
        let segment = try SharedSegment.create(supervisorPID: 1)
        let status = segment.upstream(0)
        status.publishModels(models + [.init("bad\tname"), .init("bad\nname")])
        #expect(status.models == ["base", "sql-lora"])
        #expect(status.servesAdapter("sql-lora") == true && status.servesAdapter("base") == false)
        #expect(status.modelList(contains: "sql-lora")! == (false, true) && status.modelList(contains: "sql")! == (false, false))
    }
}
