import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Worker

/// Upstream requests leave as one buffer: head and body together, promises kept.
@Suite struct UpstreamRequestEncoderTests {
    @Test func headBodyAndEndLeaveAsOneBufferAndEveryPromiseIsKept() throws {
        let channel = EmbeddedChannel(handler: UpstreamRequestEncoder())
        var headers = HTTPHeaders()
        headers.add(name: "host", value: "127.0.0.1:18000")
        headers.add(name: "content-length", value: "2")
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/chat/completions", headers: headers)
        let promises = (0..<3).map { _ in channel.eventLoop.makePromise(of: Void.self) }
        channel.write(HTTPClientRequestPart.head(head), promise: promises[0])
        channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "{}"))), promise: promises[1])
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "nothing before the end")
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: promises[2])
        var out = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(
            out.readString(length: out.readableBytes)
                == "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:18000\r\ncontent-length: 2\r\n\r\n{}")
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        for promise in promises { try promise.futureResult.wait() }
    }

    @Test func aLargeBodyFollowsTheHeadAsItIs() throws {
        let channel = EmbeddedChannel(handler: UpstreamRequestEncoder())
        let body = ByteBuffer(repeating: UInt8(ascii: "a"), count: UpstreamRequestEncoder.copyLimit + 1)
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/x", headers: ["content-length": "\(body.readableBytes)"])
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        var first = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(first.readString(length: first.readableBytes)?.hasSuffix("content-length: \(body.readableBytes)\r\n\r\n") == true)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == body)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
    }
}
