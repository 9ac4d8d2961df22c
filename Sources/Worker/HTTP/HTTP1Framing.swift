import NIOHTTP1

/// How a message's body is delimited (RFC 9112 §6.3).
public enum HTTP1Framing: Equatable, Sendable {
    /// No body (a bodiless status, no framing field in a request, a zero length).
    case none
    /// Exactly this many bytes.
    case length(Int)
    /// Chunked transfer coding, trailers skipped.
    case chunked
    /// Until the connection closes (responses only).
    case untilClose

    /// A request's framing from its one `content-length` (digits) and one
    /// `transfer-encoding` value, if any.
    public static func ofRequest(version: HTTPVersion, contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError)
        -> HTTP1Framing
    {
        if let transferEncoding {
            // RFC 9112 §6.1: a 1.0 request with transfer-encoding has faulty framing, and
            // one with content-length too is how requests are smuggled. Only a lone
            // `chunked` is understood.
            guard version == .http1_1 else { throw .malformed("transfer-encoding in an HTTP/1.0 request") }
            guard contentLength == nil else { throw .malformed("both content-length and transfer-encoding") }
            guard transferEncoding.isToken("chunked") else { throw .malformed("transfer-encoding other than chunked") }
            return .chunked
        }
        if let contentLength, contentLength > 0 { return .length(contentLength) }
        return .none
    }

    /// RFC 9112 §6.3 for a response to a request other than HEAD or CONNECT (the gateway
    /// sends neither upstream). A `transfer-encoding` overrides a `content-length`; one
    /// whose last coding is not `chunked` runs until the close.
    public static func ofResponse(status: Int, contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) -> HTTP1Framing {
        if status < 200 || status == 204 || status == 304 { return .none }
        if let transferEncoding {
            // Chunked only if it is the last coding applied.
            let last = transferEncoding.lastIndex(of: UInt8(ascii: ",")).map { $0 + 1 } ?? 0
            return transferEncoding[last...].isToken("chunked") ? .chunked : .untilClose
        }
        if let contentLength { return contentLength > 0 ? .length(contentLength) : .none }
        return .untilClose
    }
}
