import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Shared
@testable import Worker

/// What a client connection does at the HTTP level: errors for what the parser refuses,
/// the head/body/idle timeouts, and the framing the ``ResponseWriter`` writes itself
/// (content-length, chunked, HTTP/1.0, `HEAD`, `100 Continue`).
@Suite struct ConnectionProtocolTests {
    @Test func garbageGetsAnOpenAIShaped400AndTheConnectionCloses() throws {
        let f = try ConnectionFixture()
        try f.channel.writeInbound(ByteBuffer(string: "NOT HTTP AT ALL\r\n\r\n"))
        let reply = try f.written()
        #expect(reply.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(reply.contains(#""error":{"message":"Malformed HTTP request.","type":"invalid_request_error","param":null,"code":"bad_http"}"#))
        #expect(reply.lowercased().contains("connection: close"))
        let length = Int(reply.components(separatedBy: "content-length: ")[1].prefix { $0.isNumber })
        #expect(length == reply.components(separatedBy: "\r\n\r\n")[1].utf8.count)
        #expect(!f.channel.isActive)
    }

    @Test func oversizedHeadersGet431() throws {
        let f = try ConnectionFixture()
        let big = "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 100_000) + "\r\n\r\n"
        try f.channel.writeInbound(ByteBuffer(string: big))
        #expect(try f.written().hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"))
        #expect(!f.channel.isActive)
    }

    /// What the parser refuses is answered through the ``ResponseWriter`` like any request:
    /// a request id, counted in the metrics and logged, with route and method `other`.
    @Test func whatTheParserRefusesIsCountedAndLoggedLikeAnyRequest() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }
        let f = try ConnectionFixture(accessLogFD: fds[1])
        try f.channel.writeInbound(ByteBuffer(string: "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 100_000) + "\r\n\r\n"))
        let reply = try f.written()
        #expect(reply.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"))
        #expect(reply.contains("\r\nx-request-id: req_"))
        #expect(reply.contains("\r\nconnection: close\r\n\r\n"))
        #expect(
            reply.hasSuffix(
                #"{"error":{"message":"Request line or headers too large.","type":"invalid_request_error","param":null,"code":"headers_too_large"}}"#))
        #expect(!f.channel.isActive)

        let metrics = PrometheusExposition(models: [], upstreams: [("default", false)]).render(segment: f.segment)
        #expect(metrics.contains(#"llm_gateway_http_requests_total{route="other",method="other",status="431"} 1"#))
        f.handler.flushAccessLog()
        close(fds[1])
        let lines = String(decoding: FileHandle(fileDescriptor: fds[0]).readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 1)
        let text = try #require(lines.first)
        let line = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(line["route"] as? String == "other")
        #expect(line["method"] as? String == "other")
        #expect(line["status"] as? Int == 431)
        #expect(line["error"] as? String == "headers_too_large")
    }

    @Test func garbageAfterAResponseThatClosedIsNotAnswered() throws {
        let f = try ConnectionFixture()
        try f.channel.writeInbound(ByteBuffer(string: "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nNOT HTTP\r\n\r\n"))
        #expect(ConnectionFixture.statuses(try f.written()) == [200])
        #expect(!f.channel.isActive)
    }

    @Test func aConnectionThatSendsNoHeadIsClosedAfterTheHeadTimeout() throws {
        let f = try ConnectionFixture(timeouts: .init(head: .seconds(2), body: .seconds(5), idle: .seconds(7)))
        try f.channel.writeInbound(ByteBuffer(string: "GET /hea"))
        f.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1999))
        #expect(f.channel.isActive)
        f.channel.embeddedEventLoop.advanceTime(by: .milliseconds(2))
        #expect(!f.channel.isActive)
    }

    @Test func aSlowBodyIsCut() throws {
        let f = try ConnectionFixture(timeouts: .init(head: .seconds(2), body: .seconds(5), idle: .seconds(7)))
        try f.channel.writeInbound(ByteBuffer(string: "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"))
        f.channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(f.channel.isActive)  // the head arrived: the body has 5 s
        f.channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!f.channel.isActive)
    }

    @Test func aLongResponseIsNotCutAndAnIdleKeepAliveConnectionClosesAfterIt() throws {
        // The demo streams ~20 words 20 ms apart: with a 100 ms body and idle limit, the
        // stream outlasts both, which only count before the request and after the response.
        let f = try ConnectionFixture(timeouts: .init(head: .seconds(2), body: .milliseconds(100), idle: .milliseconds(100)))
        try f.channel.writeInbound(ByteBuffer(string: ConnectionFixture.post("/v1/chat/completions", ConnectionFixture.streamBody)))
        for _ in 0..<100 {
            f.channel.embeddedEventLoop.advanceTime(by: .milliseconds(20))
            if try f.written().contains("data: [DONE]") { break }
            #expect(f.channel.isActive)
        }
        #expect(f.channel.isActive, "the stream ended; the idle limit starts now")
        f.channel.embeddedEventLoop.advanceTime(by: .milliseconds(99))
        #expect(f.channel.isActive)
        f.channel.embeddedEventLoop.advanceTime(by: .milliseconds(2))
        #expect(!f.channel.isActive)
    }

    /// Decodes a chunked body into its chunks; nil when the framing is wrong.
    static func dechunk(_ body: Substring) -> (data: String, chunks: [String])? {
        var rest = body.utf8[...]
        var data = [UInt8]()
        var chunks: [String] = []
        while true {
            guard let lineEnd = rest.firstRange(of: "\r\n".utf8),
                let size = Int(String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self), radix: 16)
            else { return nil }
            rest = rest[lineEnd.upperBound...]
            if size == 0 { return rest.elementsEqual("\r\n".utf8) ? (String(decoding: data, as: UTF8.self), chunks) : nil }
            guard rest.count >= size + 2 else { return nil }
            data += rest.prefix(size)
            chunks.append(String(decoding: rest.prefix(size), as: UTF8.self))
            rest = rest.dropFirst(size)
            guard rest.starts(with: "\r\n".utf8) else { return nil }
            rest = rest.dropFirst(2)
        }
    }

    @Test func aStreamIsChunkedOneChunkPerFlushAndEndsWithTheLastChunk() throws {
        let f = try ConnectionFixture()
        try f.channel.writeInbound(ByteBuffer(string: ConnectionFixture.post("/v1/chat/completions", ConnectionFixture.streamBody)))
        f.channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        let text = try f.written()
        let parts = text.split(separator: "\r\n\r\n", maxSplits: 1)
        #expect(parts[0].contains("transfer-encoding: chunked"))
        #expect(!parts[0].contains("content-length"))
        let decoded = try #require(Self.dechunk(parts[1]))
        let events = decoded.data.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        #expect(events.allSatisfy { $0.hasPrefix("data: ") })
        #expect(events.last == "data: [DONE]")
        // The role event leaves with the head (flushed when the request's read ends), then
        // one word per flush; the finish event and [DONE] are written together before the
        // end: what is written between two flushes leaves as one chunk.
        let eventsPerChunk = decoded.chunks.map { $0.components(separatedBy: "\n\n").count - 1 }
        #expect(eventsPerChunk == Array(repeating: 1, count: events.count - 2) + [2])
        #expect(decoded.chunks.allSatisfy { $0.hasSuffix("\n\n") })
        #expect(decoded.chunks.last?.hasSuffix("data: [DONE]\n\n") == true)
        #expect(f.channel.isActive)
    }

    @Test func aLargeBodyIsFramedByItsLength() throws {
        let f = try ConnectionFixture(maxBodyBytes: 1 << 16)
        let inputs = (0..<300).map { "\"text number \($0)\"" }.joined(separator: ",")
        let body = #"{"model":"demo","input":[\#(inputs)]}"#
        try f.channel.writeInbound(ByteBuffer(string: ConnectionFixture.post("/v1/embeddings", body)))
        let text = try f.written()
        let parts = text.split(separator: "\r\n\r\n", maxSplits: 1)
        let length = try #require(Int(parts[0].components(separatedBy: "content-length: ")[1].prefix { $0.isNumber }))
        #expect(length > ResponseWriter.copyLimit, "large enough to be queued on its own")
        #expect(parts[1].utf8.count == length)
        #expect(parts[1].hasSuffix("}}"))
    }

    @Test func http10GetsKeepAliveOnlyWhenItAsksAndAStreamEndsWithTheConnection() throws {
        let f = try ConnectionFixture()
        try f.channel.writeInbound(ByteBuffer(string: "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
        let first = try f.written()
        #expect(first.hasPrefix("HTTP/1.0 200 OK\r\n"))
        #expect(first.contains("connection: keep-alive"))
        #expect(f.channel.isActive)

        try f.channel.writeInbound(
            ByteBuffer(
                string: ConnectionFixture.post(
                    "/v1/chat/completions", ConnectionFixture.streamBody, version: "HTTP/1.0", headers: "Connection: keep-alive\r\n")))
        f.channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        let stream = try f.written()
        #expect(stream.contains("connection: close"), "no length and no chunked in HTTP/1.0: the close ends the body")
        #expect(!stream.contains("transfer-encoding"))
        #expect(stream.hasSuffix("data: [DONE]\n\n"))
        #expect(!f.channel.isActive)
    }

    @Test func expectContinueGetsA100BeforeTheBody() throws {
        let f = try ConnectionFixture()
        let body = #"{"model":"demo","input":"hi"}"#
        try f.channel.writeInbound(
            ByteBuffer(string: "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: \(body.utf8.count)\r\n\r\n"))
        #expect(try f.written() == "HTTP/1.1 100 Continue\r\n\r\n")
        try f.channel.writeInbound(ByteBuffer(string: body))
        #expect(ConnectionFixture.statuses(try f.written()) == [200])
    }
}
