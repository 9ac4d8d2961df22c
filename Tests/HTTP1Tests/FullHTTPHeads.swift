import NIOCore
import NIOHTTP1

@testable import HTTP1

// NIO's heads as ``HTTP1Parser`` heads that keep every field, for comparing the parser with
// NIO's own (llhttp) and the gateway's lean heads with what the full heads say. The start
// line and the framing come from the gateway's heads, so the comparisons test those.

/// A route that is the path: the tests' ``RequestRoute``.
struct PathRoute: RequestRoute, Equatable {
    let path: String
    init(path: String) { self.path = path }
}

/// The gateway's lean request head, its route the path.
typealias PathRequestHead = RequestHead<PathRoute>

extension HTTPRequestHead: HTTP1Head {
    public init(startLine: UnsafeRawBufferPointer) throws(HTTP1ParseError) {
        let lean = try PathRequestHead(startLine: startLine)
        self.init(version: lean.version, method: lean.method, uri: lean.uri)
    }

    public mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        headers.add(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
    }

    public func framing(contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError) -> HTTP1Framing {
        try HTTP1Framing.ofRequest(version: version, contentLength: contentLength, transferEncoding: transferEncoding)
    }
}

extension HTTPResponseHead: HTTP1Head {
    public init(startLine: UnsafeRawBufferPointer) throws(HTTP1ParseError) {
        let lean = try UpstreamResponseHead(startLine: startLine)
        self.init(version: lean.version, status: HTTPResponseStatus(statusCode: lean.status))
    }

    public mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        headers.add(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
    }

    public func framing(contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError) -> HTTP1Framing {
        HTTP1Framing.ofResponse(status: Int(status.code), contentLength: contentLength, transferEncoding: transferEncoding)
    }
}
