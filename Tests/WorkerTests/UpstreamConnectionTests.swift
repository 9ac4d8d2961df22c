import NIOCore
import NIOHTTP1
import Testing

@testable import Worker

/// Upstream requests leave as one buffer (head and body together) unless the body is large.
@Suite struct UpstreamConnectionTests {
    @Test func headAndBodyLeaveAsOneBuffer() throws {
        var headers = HTTPHeaders()
        headers.add(name: "host", value: "127.0.0.1:18000")
        headers.add(name: "content-length", value: "2")
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/chat/completions", headers: headers)
        var (out, rest) = UpstreamConnection.encode(head: head, body: ByteBuffer(string: "{}"), allocator: ByteBufferAllocator())
        #expect(
            out.readString(length: out.readableBytes)
                == "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:18000\r\ncontent-length: 2\r\n\r\n{}")
        #expect(rest == nil)
    }

    @Test func aLargeBodyFollowsTheHeadAsItIs() throws {
        let body = ByteBuffer(repeating: UInt8(ascii: "a"), count: UpstreamConnection.copyLimit + 1)
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/x", headers: ["content-length": "\(body.readableBytes)"])
        var (first, rest) = UpstreamConnection.encode(head: head, body: body, allocator: ByteBufferAllocator())
        #expect(first.readString(length: first.readableBytes) == "POST /x HTTP/1.1\r\ncontent-length: \(body.readableBytes)\r\n\r\n")
        #expect(rest == body)
    }
}
