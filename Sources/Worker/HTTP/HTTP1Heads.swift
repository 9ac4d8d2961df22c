import NIOCore
import NIOHTTP1
import Shared

/// What differs between a request and a response for ``HTTP1Parser``: the start line, the
/// fields a head keeps, and how the framing fields decide the body.
///
/// The parser checks every field line (name a token, value without control characters),
/// then hands it to ``add(name:value:)``; a head keeps what it acts on and drops the rest,
/// so a field nobody reads costs no `String`.
protocol HTTP1Head: Equatable {
    /// The head of a message with this start line (without CRLF).
    init(startLine: UnsafeRawBufferPointer) throws(HTTP1ParseError)
    /// One checked field: its name, and its value without surrounding whitespace.
    mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)
    /// The body's framing, from the one `content-length` (already checked to be digits)
    /// and the one `transfer-encoding` value the head had, if any. Called once, after the
    /// fields: a head may keep the length.
    mutating func framing(contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError) -> HTTP1Framing
}

/// A client's request head as the gateway reads it: the request line and the five fields it
/// acts on (and whether `host` came once, as HTTP/1.1 requires). The others (an SDK sends a dozen: `user-agent`, `x-stainless-…`, `accept`) are
/// checked by the parser and dropped. A class: the head travels through the connection's
/// states and the request as one reference.
final class RequestHead: HTTP1Head {
    let method: HTTPMethod
    /// The request target in origin form: as sent, or the path and query of an
    /// absolute-form target (`http://host/v1/models` → `/v1/models`), which RFC 9112
    /// §3.2.2 has a server accept.
    let uri: String
    /// The gateway route ``uri`` matches, found once per request.
    let route: Route
    let version: HTTPVersion
    /// The `authorization` field (a second one fails the head: which would count?).
    private(set) var authorization: String?
    private var authorizations = 0
    private var hosts = 0
    /// The first `x-request-id` field (``RequestID`` decides whether it is used).
    private(set) var requestID: String?
    /// The first field named ``sessionHeader``: the session routing keeps on one upstream.
    private(set) var sessionID: String?
    /// The lower-case name of the field that carries a session id (`ROUTING_SESSION_HEADER`,
    /// letters, digits and `-`): set once when the worker starts, before it serves anything.
    nonisolated(unsafe) static var sessionHeader: [UInt8] = Array("x-session-id".utf8)
    /// The first `expect` field is `100-continue` (any case).
    private(set) var expectsContinue = false
    private var expectSeen = false
    /// `content-length` as the parser checked it (one, of digits), else 0.
    private(set) var contentLength = 0
    /// `transfer-encoding: chunked`.
    private(set) var isChunked = false

    /// A body follows the head.
    var hasBody: Bool { contentLength > 0 || isChunked }
    /// What the `connection` fields say; nil when none says `close` or `keep-alive`.
    private var connection: Bool?

    /// `method SP request-target SP HTTP-version`.
    init(startLine line: UnsafeRawBufferPointer) throws(HTTP1ParseError) {
        guard let firstSpace = line.firstIndex(of: 0x20), firstSpace > 0,
            let lastSpace = line.lastIndex(of: 0x20), lastSpace > firstSpace + 1
        else { throw .malformed("invalid request line") }
        let method = UnsafeRawBufferPointer(rebasing: line[..<firstSpace])
        let target = UnsafeRawBufferPointer(rebasing: line[(firstSpace + 1)..<lastSpace])
        guard method.allSatisfy(isTokenByte) else { throw .malformed("invalid method") }
        // Visible ASCII only: no spaces, controls or raw non-ASCII in the target; and one of
        // RFC 9112's forms: origin (`/…`), absolute (`http://…`), asterisk, or authority
        // (CONNECT only).
        guard target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw .malformed("invalid request target") }
        let isConnect = method.elementsEqual("CONNECT".utf8)
        guard
            target[0] == UInt8(ascii: "/") || (target.count == 1 && target[0] == UInt8(ascii: "*")) || isConnect
                || Self.isAbsoluteForm(target)
        else { throw .malformed("invalid request target") }
        self.version = try parseHTTPVersion(UnsafeRawBufferPointer(rebasing: line[(lastSpace + 1)...]))
        self.method = Self.method(method)
        self.uri = Self.originForm(target)
        self.route = Route(path: uri)
    }

    /// The path and query of an absolute-form target (`/` when it has no path); any other
    /// target as it is.
    static func originForm(_ target: UnsafeRawBufferPointer) -> String {
        guard target.first != UInt8(ascii: "/"), isAbsoluteForm(target), let colon = target.firstIndex(of: UInt8(ascii: ":")) else {
            return String(decoding: target, as: UTF8.self)
        }
        let rest = target[(colon + 3)...]
        guard let slash = rest.firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") }) else { return "/" }
        if target[slash] == UInt8(ascii: "?") { return "/" + String(decoding: target[slash...], as: UTF8.self) }
        return String(decoding: target[slash...], as: UTF8.self)
    }

    func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        switch name.count {
        case 13 where name.isName("authorization"):
            authorizations += 1
            if authorization == nil { authorization = String(decoding: value, as: UTF8.self) }
        case 4 where name.isName("host"):
            hosts += 1
        case 12 where name.isName("x-request-id"):
            if requestID == nil { requestID = String(decoding: value, as: UTF8.self) }
        case 10 where name.isName("connection"):
            connection = combineConnection(connection, value)
        case 6 where name.isName("expect"):
            if !expectSeen {
                expectSeen = true
                expectsContinue = value.isToken("100-continue")
            }
        default:
            if sessionID == nil, name.count == Self.sessionHeader.count, Self.sessionHeader.withUnsafeBytes({ name.isName($0) }) {
                sessionID = String(decoding: value.prefix(256), as: UTF8.self)
            }
        }
    }

    /// Whether the connection stays open after this exchange: as the client asked, else
    /// HTTP/1.1's default (open) or HTTP/1.0's (closed).
    var keepsConnectionAlive: Bool { connection ?? (version == .http1_1) }

    func framing(contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError) -> HTTP1Framing {
        // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host (HTTP/1.0 may have none).
        guard hosts <= 1, hosts == 1 || version == .http1_0 else { throw .malformed(hosts == 0 ? "no Host field" : "more than one Host field") }
        guard authorizations <= 1 else { throw .malformed("more than one Authorization field") }
        self.contentLength = contentLength ?? 0
        let framing = try Self.framing(version: version, contentLength: contentLength, transferEncoding: transferEncoding)
        isChunked = framing == .chunked
        return framing
    }

    static func framing(version: HTTPVersion, contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError)
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

    static func == (a: RequestHead, b: RequestHead) -> Bool {
        a === b
            || (a.method == b.method && a.uri == b.uri && a.version == b.version && a.authorization == b.authorization
                && a.requestID == b.requestID && a.expectsContinue == b.expectsContinue && a.contentLength == b.contentLength
                && a.connection == b.connection)
    }

    /// The common methods without a `String` (and its comparison with each known method).
    private static func method(_ bytes: UnsafeRawBufferPointer) -> HTTPMethod {
        if bytes.elementsEqual("POST".utf8) { return .POST }
        if bytes.elementsEqual("GET".utf8) { return .GET }
        return HTTPMethod(rawValue: String(decoding: bytes, as: UTF8.self))
    }

    /// `http://` or `https://`, in any case.
    private static func isAbsoluteForm(_ target: UnsafeRawBufferPointer) -> Bool {
        for scheme in ["http://", "https://"] where target.count > scheme.utf8.count {
            if zip(target, scheme.utf8).allSatisfy({ $0 | 0x20 == $1 | 0x20 }) { return true }
        }
        return false
    }
}

/// An upstream's response head as the gateway reads it: the status, the content type and
/// whether the connection stays open. The other fields (`date`, `server`) are dropped.
struct UpstreamResponseHead: HTTP1Head {
    let status: Int
    let version: HTTPVersion
    /// The first `content-type` field.
    private(set) var contentType: String?
    /// `content-length` as the parser checked it, if the head had one.
    private(set) var contentLength: Int?
    private var connection: Bool?

    /// `HTTP-version SP status-code [SP reason-phrase]`.
    init(startLine line: UnsafeRawBufferPointer) throws(HTTP1ParseError) {
        guard line.count >= 12, line[8] == 0x20, line[9...11].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            line.count == 12 || line[12] == 0x20
        else { throw .malformed("invalid status line") }
        self.version = try parseHTTPVersion(UnsafeRawBufferPointer(rebasing: line[..<8]))
        self.status = line[9...11].reduce(0) { $0 * 10 + Int($1 - 0x30) }
        guard status >= 100 else { throw .malformed("invalid status code") }
    }

    /// The content types vLLM sends: these come from the literals (no `String` allocated).
    private static let knownContentTypes = ["application/json", "text/event-stream; charset=utf-8", "text/event-stream"]

    mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
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
    var keepsConnectionAlive: Bool { connection ?? (version == .http1_1) }

    mutating func framing(contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError) -> HTTP1Framing {
        self.contentLength = contentLength
        return Self.framing(status: status, contentLength: contentLength, transferEncoding: transferEncoding)
    }

    /// RFC 9112 §6.3 for a response to a request other than HEAD or CONNECT (the gateway
    /// sends neither upstream).
    static func framing(status: Int, contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) -> HTTP1Framing {
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

// MARK: Shared pieces

/// `HTTP/1.0` or `HTTP/1.1`, the whole of `bytes`; another well-formed `HTTP/d.d` is
/// ``HTTP1ParseError/versionNotSupported``, anything else malformed.
func parseHTTPVersion(_ bytes: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> HTTPVersion {
    let prefix: StaticString = "HTTP/"
    let isDigit = { (byte: UInt8) in byte >= 0x30 && byte <= 0x39 }
    guard bytes.count == 8, (0..<5).allSatisfy({ bytes[$0] == prefix.utf8Start[$0] }), isDigit(bytes[5]), bytes[6] == UInt8(ascii: "."),
        isDigit(bytes[7])
    else { throw .malformed("not HTTP/1.x") }
    switch (bytes[5], bytes[7]) {
    case (UInt8(ascii: "1"), UInt8(ascii: "1")): return .http1_1
    case (UInt8(ascii: "1"), UInt8(ascii: "0")): return .http1_0
    default: throw .versionNotSupported
    }
}

/// RFC 9110 `tchar`.
func isTokenByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        true
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
        UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
        UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        true
    default:
        false
    }
}

/// The keep-alive decision so far, with one more `connection` field: `close` wins over
/// `keep-alive` (in this field or an earlier one); nil while neither was said. As NIO's
/// `isKeepAlive` decides, without splitting the value into strings.
func combineConnection(_ sofar: Bool?, _ value: UnsafeRawBufferPointer) -> Bool? {
    if sofar == false { return false }
    var says = sofar
    var start = 0
    while start < value.count {
        var end = start
        while end < value.count && value[end] != UInt8(ascii: ",") { end += 1 }
        let token = UnsafeRawBufferPointer(rebasing: value[start..<end])
        start = end + 1
        if token.isToken("close") { return false }
        if token.isToken("keep-alive") { says = true }
    }
    return says
}

extension UnsafeRawBufferPointer {
    /// True if these bytes (a field name, a token) are `name` (lowercase ASCII) in any case.
    /// Setting bit 0x20 lowers letters and keeps the other token bytes of the names asked
    /// for (`-`, digits) as they are.
    func isName(_ name: StaticString) -> Bool {
        isName(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
    }

    /// Equal to `lower` (lower-case letters, digits, `-`) in any case.
    func isName(_ lower: UnsafeRawBufferPointer) -> Bool {
        guard count == lower.count else { return false }
        for i in 0..<count where self[i] | 0x20 != lower[i] { return false }
        return true
    }
}

extension BidirectionalCollection<UInt8> {
    /// True if these bytes, without surrounding spaces and tabs, are `token` (lowercase
    /// ASCII) in any case.
    func isToken(_ token: StaticString) -> Bool {
        var trimmed = self[...]
        while let first = trimmed.first, first == 0x20 || first == 0x09 { trimmed = trimmed.dropFirst() }
        while let last = trimmed.last, last == 0x20 || last == 0x09 { trimmed = trimmed.dropLast() }
        let expected = UnsafeRawBufferPointer(start: token.utf8Start, count: token.utf8CodeUnitCount)
        return trimmed.elementsEqual(expected, by: { $0 | 0x20 == $1 })
    }
}
