import NIOHTTP1

/// An upstream's response head as the gateway reads it: the status, the content type and
/// whether the connection stays open. The other fields (`date`, `server`) are dropped.
public struct UpstreamResponseHead: HTTP1Head {
    /// The status code, 100 to 999.
    public let status: Int
    /// HTTP/1.0 or HTTP/1.1.
    public let version: HTTPVersion
    /// The first `content-type` field.
    public private(set) var contentType: String?
    /// `content-length` as the parser checked it, if the head had one.
    public private(set) var contentLength: Int?
    private var connection: Bool?

    /// `HTTP-version SP status-code [SP reason-phrase]`.
    public init(startLine line: UnsafeRawBufferPointer) throws(HTTP1ParseError) {
        guard line.count >= 12, line[8] == 0x20, line[9...11].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            line.count == 12 || line[12] == 0x20
        else { throw .malformed("invalid status line") }
        self.version = try parseHTTPVersion(UnsafeRawBufferPointer(rebasing: line[..<8]))
        self.status = line[9...11].reduce(0) { $0 * 10 + Int($1 - 0x30) }
        guard status >= 100 else { throw .malformed("invalid status code") }
    }

    /// The content types vLLM sends: these come from the literals (no `String` allocated).
    private static let knownContentTypes = ["application/json", "text/event-stream; charset=utf-8", "text/event-stream"]

    /// Keeps the first `content-type` and what the `connection` fields say.
    public mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        switch name.count {
        case 12 where name.isName("content-type"):
            guard contentType == nil else { return }
            contentType =
                Self.knownContentTypes.first { known in known.utf8.withContiguousStorageIfAvailable { value.elementsEqual($0) } ?? false }
                ?? String(decoding: value, as: UTF8.self)
        case 10 where name.isName("connection"):
            connection = combineConnection(connection, value)
        default:
            break
        }
    }

    /// Whether the connection stays open after this response: as the upstream said, else
    /// HTTP/1.1's default (open) or HTTP/1.0's (closed).
    public var keepsConnectionAlive: Bool { connection ?? (version == .http1_1) }

    /// Keeps the length, and frames the body as
    /// ``HTTP1Framing/ofResponse(status:contentLength:transferEncoding:)`` says.
    public mutating func framing(contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError) -> HTTP1Framing {
        self.contentLength = contentLength
        return HTTP1Framing.ofResponse(status: status, contentLength: contentLength, transferEncoding: transferEncoding)
    }
}
