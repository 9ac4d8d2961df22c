import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Shared
@testable import Worker

/// The worker's whole connection pipeline (NIO's request decoder, ``GatewayConnection``)
/// on an `EmbeddedChannel`, with the demo upstream: bytes in, bytes out, time moved by hand.
@Suite struct GatewayConnectionTests {
    func makeFixture() throws -> ConnectionFixture { try ConnectionFixture() }

    func statuses(_ text: String) -> [Int] { ConnectionFixture.statuses(text) }

    @Test func pipelinedRequestsAreAnsweredInOrderAndCloseWhenAsked() throws {
        let f = try makeFixture()
        try f.channel.writeInbound(
            ByteBuffer(
                string: "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\r\n\r\n"
                    + "GET /nowhere HTTP/1.1\r\nHost: x\r\nX-Request-Id: b\r\n\r\n"
                    + "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Request-Id: c\r\nConnection: close\r\n\r\n"
                    + "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: d\r\n\r\n"))
        f.channel.embeddedEventLoop.run()
        let text = try f.written()
        #expect(statuses(text) == [200, 404, 200])
        let ids = text.components(separatedBy: "x-request-id: ").dropFirst().map { $0.prefix(1) }
        #expect(ids == ["a", "b", "c"])
        #expect(text.contains(#""data":[{"id":"demo""#))
        #expect(!f.channel.isActive, "closed after the response to `Connection: close`; the fourth request is not served")
    }

    @Test func aTooLargeBodyGets413WithoutReadingItAndTheConnectionCloses() throws {
        let f = try makeFixture()
        try f.channel.writeInbound(ByteBuffer(string: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"model\""))
        f.channel.embeddedEventLoop.run()
        let text = try f.written()
        #expect(statuses(text) == [413])
        #expect(text.lowercased().contains("connection: close"))
        #expect(!f.channel.isActive)
    }

    /// An unauthenticated client cannot make the worker hold its body (issue 20, finding 8):
    /// the 401 leaves on the head alone and the connection closes.
    @Test func aRequestWithoutTheKeyGets401BeforeItsBodyIsRead() throws {
        let f = try ConnectionFixture(environment: ["BEARER_TOKEN": "secret"], maxBodyBytes: 4 << 20)
        try f.channel.writeInbound(ByteBuffer(string: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{"))
        f.channel.embeddedEventLoop.run()
        let text = try f.written()
        #expect(statuses(text) == [401])
        #expect(text.lowercased().contains("connection: close"))
        #expect(!f.channel.isActive)
    }

    @Test func aRequestWithTheKeyHasItsBodyRead() throws {
        let f = try ConnectionFixture(environment: ["BEARER_TOKEN": "secret"])
        let body = #"{"model":"demo","messages":[{"role":"user","content":"hi"}]}"#
        try f.channel.writeInbound(
            ByteBuffer(string: ConnectionFixture.post("/v1/chat/completions", body, headers: "Host: x\r\nAuthorization: Bearer secret\r\n")))
        f.channel.embeddedEventLoop.run()
        #expect(statuses(try f.written()) == [200])
    }

    @Test func aBodyForAnUnknownRouteIsNotReadEither() throws {
        let f = try makeFixture()
        try f.channel.writeInbound(ByteBuffer(string: "POST /v1/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"))
        f.channel.embeddedEventLoop.run()
        #expect(statuses(try f.written()) == [404])
        #expect(!f.channel.isActive)
    }

    /// `/idle` needs no key, counts an open stream as activity, and API requests (not
    /// probes) reset it.
    @Test func idleCountsOpenAPIRequestsOnly() throws {
        let f = try ConnectionFixture(environment: ["BEARER_TOKEN": "secret"])
        f.segment.noteRequest(atMillis: 1_000)  // long ago
        try f.channel.writeInbound(ByteBuffer(string: "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /idle HTTP/1.1\r\nHost: x\r\n\r\n"))
        let idle = try f.written()
        #expect(statuses(idle) == [200, 200])
        #expect(idle.contains(#","open_streams":0}"#))
        #expect(!idle.contains(#"{"idle_seconds":0.0,"#), "a health probe is not activity")
        try f.channel.writeInbound(
            ByteBuffer(
                string: ConnectionFixture.post(
                    "/v1/chat/completions", ConnectionFixture.streamBody, headers: "Host: x\r\nAuthorization: Bearer secret\r\n")))
        _ = try f.written()
        #expect(f.segment.openRequests == 1, "the stream is open")
        f.channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        #expect(try f.written().contains("[DONE]"))
        #expect(f.segment.openRequests == 0)
        #expect(f.segment.lastRequestMillis > 1_000)
    }

    @Test func headGetsTheHeadersOnly() throws {
        let f = try makeFixture()
        try f.channel.writeInbound(ByteBuffer(string: "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"))
        let text = try f.written()
        #expect(statuses(text) == [200])
        #expect(text.contains("content-length: 15"))
        #expect(text.hasSuffix("\r\n\r\n"), "no body after the headers")
        #expect(f.channel.isActive)
    }

    @Test func aStreamIsWrittenEventByEventAsTheUpstreamProducesIt() throws {
        let f = try makeFixture()
        try f.channel.writeInbound(ByteBuffer(string: ConnectionFixture.post("/v1/chat/completions", ConnectionFixture.streamBody)))
        let head = try f.written()
        #expect(statuses(head) == [200])
        #expect(head.contains("text/event-stream"))
        #expect(!head.contains("[DONE]"), "nothing past the first event before time moves")
        f.channel.embeddedEventLoop.advanceTime(by: .milliseconds(20))
        let one = try f.written()
        #expect(one.components(separatedBy: "data: ").count - 1 == 1, "one word per 20 ms, each flushed on its own")
        f.channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        let rest = try f.written()
        #expect(rest.contains("data: [DONE]"))
        #expect(f.channel.isActive, "keep-alive after a complete stream")
    }

    @Test func aClientThatHangsUpMidStreamIsForgottenAndCountedWithTheStatusItGot() throws {
        let f = try makeFixture()
        try f.channel.writeInbound(ByteBuffer(string: ConnectionFixture.post("/v1/chat/completions", ConnectionFixture.streamBody)))
        f.channel.embeddedEventLoop.advanceTime(by: .milliseconds(50))
        _ = try f.written()
        try f.channel.close().wait()
        f.channel.embeddedEventLoop.advanceTime(by: .seconds(5))  // the demo's next words find the client gone
        #expect(f.handler.connections.count == 0)
        let text = PrometheusExposition(models: [], upstreams: [("default", false)]).render(segment: f.segment)
        #expect(text.contains(#"status="200""#), "the stream's head had gone out: counted with its status")
    }

    @Test func requestsPipelinedBehindAStreamAreServedAfterItAndAFloodClosesTheConnection() throws {
        let stream = ConnectionFixture.post("/v1/chat/completions", ConnectionFixture.streamBody)
        let health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"

        let f = try makeFixture()
        try f.channel.writeInbound(ByteBuffer(string: stream + String(repeating: health, count: 10)))
        #expect(statuses(try f.written()) == [200], "the health checks wait for the stream")
        f.channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        let rest = try f.written()
        #expect(rest.contains("data: [DONE]"))
        #expect(statuses(rest) == Array(repeating: 200, count: 10))
        #expect(rest.range(of: "data: [DONE]")!.lowerBound < rest.range(of: "HTTP/1.1 200")!.lowerBound)

        let flooded = try makeFixture()
        _ = try? flooded.channel.writeInbound(ByteBuffer(string: stream + String(repeating: health, count: 2000)))
        #expect(!flooded.channel.isActive, "more than \(ClientConnectionStateMachine.maxPipelinedParts) parts waiting: closed")
    }

    @Test func requestIDsAreTheClientsWhenPlainElseNewAndDistinct() {
        #expect(RequestID.make(given: "abc-123_X") == "abc-123_X")
        let made = (0..<3).map { _ in RequestID.make(given: "bad id\u{7}") }
        for id in made {
            #expect(id.range(of: "^req_[0-9a-f]{16}$", options: .regularExpression) != nil, "\(id)")
            #expect(id.hasPrefix("req_" + RequestID.prefix))
        }
        #expect(Set(made).count == 3)
        let counters = made.map { UInt64($0.suffix(8), radix: 16)! }
        #expect(counters[0] < counters[1] && counters[1] < counters[2], "a counter (other tests may take ids in between)")
    }
}
