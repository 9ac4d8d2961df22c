import NIOCore
import Testing

@testable import Worker

/// Upstream requests leave as one buffer (head and body together) unless the body is large.
@Suite struct UpstreamConnectionTests {
    static let request = UpstreamRequest(
        pathPrefix: "", route: "/v1/chat/completions", host: "127.0.0.1:18000", acceptsEventStream: false, requestID: "req_1",
        authorization: nil)

    @Test func headAndBodyLeaveAsOneBuffer() throws {
        var (out, rest) = UpstreamConnection.encode(Self.request, body: ByteBuffer(string: "{}"), allocator: ByteBufferAllocator())
        #expect(
            out.readString(length: out.readableBytes)
                == "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:18000\r\ncontent-type: application/json\r\n"
                + "content-length: 2\r\naccept: application/json\r\nx-request-id: req_1\r\n\r\n{}")
        #expect(rest == nil)
    }

    @Test func aStreamedRequestToAFallbackCarriesItsPathAcceptAndKey() throws {
        var request = Self.request
        request.pathPrefix = "/openai"
        request.host = "api.example.com"
        request.acceptsEventStream = true
        request.authorization = "Bearer sk-cloud"
        var (out, _) = UpstreamConnection.encode(request, body: ByteBuffer(string: "{}"), allocator: ByteBufferAllocator())
        #expect(
            out.readString(length: out.readableBytes)
                == "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: api.example.com\r\ncontent-type: application/json\r\n"
                + "content-length: 2\r\naccept: text/event-stream\r\nx-request-id: req_1\r\nauthorization: Bearer sk-cloud\r\n\r\n{}")
    }

    @Test func aLargeBodyFollowsTheHeadAsItIs() throws {
        let body = ByteBuffer(repeating: UInt8(ascii: "a"), count: UpstreamConnection.copyLimit + 1)
        var (first, rest) = UpstreamConnection.encode(Self.request, body: body, allocator: ByteBufferAllocator())
        let head = first.readString(length: first.readableBytes) ?? ""
        #expect(head.hasSuffix("content-length: \(body.readableBytes)\r\naccept: application/json\r\nx-request-id: req_1\r\n\r\n"))
        #expect(rest == body)
    }
}
