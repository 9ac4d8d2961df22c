import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Shared
@testable import Worker

/// The worker's ChannelHandlers on an `EmbeddedChannel` with NIO's real HTTP codec: bytes
/// in, bytes out, time moved by hand.
@Suite struct ChannelHandlerTests {
    static let segment = try! SharedSegment.create(supervisorPID: 1)
    static let metrics = GatewayMetrics(segment: segment, slot: 0, models: [])

    func makeChannel(timeouts: ConnectionTimeoutHandler.Timeouts = .init(head: .seconds(10), body: .seconds(60), idle: .seconds(30))) throws
        -> EmbeddedChannel
    {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
        try channel.pipeline.syncOperations.addHandler(HTTPProtocolErrorHandler(metrics: Self.metrics))
        try channel.pipeline.syncOperations.addHandler(ConnectionTimeoutHandler(timeouts: timeouts))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            text += buffer.readString(length: buffer.readableBytes) ?? ""
        }
        return text
    }

    @Test func garbageGetsAnOpenAIShaped400AndTheConnectionCloses() throws {
        let channel = try makeChannel()
        // The handler answers the parser error itself; nothing reaches the application.
        try channel.writeInbound(ByteBuffer(string: "NOT HTTP AT ALL\r\n\r\n"))
        #expect(try channel.readInbound(as: HTTPServerRequestPart.self) == nil)
        let reply = try written(channel)
        #expect(reply.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(reply.contains(#""error":{"message":"Malformed HTTP request.","type":"invalid_request_error","param":null,"code":"bad_http"}"#))
        #expect(reply.lowercased().contains("connection: close"))
        #expect(!channel.isActive)
    }

    @Test func oversizedHeadersGet431() throws {
        let channel = try makeChannel()
        let big = "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 100_000) + "\r\n\r\n"
        try channel.writeInbound(ByteBuffer(string: big))
        #expect(try written(channel).hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"))
        #expect(!channel.isActive)
    }

    @Test func aConnectionThatSendsNoHeadIsClosedAfterTheHeadTimeout() throws {
        let channel = try makeChannel(timeouts: .init(head: .seconds(2), body: .seconds(5), idle: .seconds(7)))
        try channel.writeInbound(ByteBuffer(string: "GET /hea"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1999))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2))
        #expect(!channel.isActive)
    }

    @Test func aSlowBodyIsCutAndAnIdleKeepAliveConnectionCloses() throws {
        let channel = try makeChannel(timeouts: .init(head: .seconds(2), body: .seconds(5), idle: .seconds(7)))
        try channel.writeInbound(ByteBuffer(string: "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"))
        while try channel.readInbound(as: HTTPServerRequestPart.self) != nil {}
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)  // the head arrived: the body has 5 s
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)

        let idle = try makeChannel(timeouts: .init(head: .seconds(2), body: .seconds(5), idle: .seconds(7)))
        try idle.writeInbound(ByteBuffer(string: "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
        while try idle.readInbound(as: HTTPServerRequestPart.self) != nil {}
        idle.embeddedEventLoop.advanceTime(by: .seconds(30))
        #expect(idle.isActive)  // a response may take as long as the upstream needs
        let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "0"])
        try idle.writeOutbound(HTTPServerResponsePart.head(head))
        try idle.writeOutbound(HTTPServerResponsePart.end(nil))
        idle.embeddedEventLoop.advanceTime(by: .seconds(6))
        #expect(idle.isActive)
        idle.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!idle.isActive)
    }
}
