import NIOHTTP1

/// What a server makes of a request's target once, while the head is parsed: the gateway's
/// `Route`. A type parameter, so that this module knows no routes.
public protocol RequestRoute {
    /// The route of a target in origin form (`/v1/models?x=1`), or of `*` or an authority.
    init(path: String)
    /// The head keeps its `content-type` (``RequestHead/contentType``).
    var keepsContentType: Bool { get }
}

extension RequestRoute {
    public var keepsContentType: Bool { false }
}

/// A client's request head as the gateway reads it: the request line, its route, and the
/// seven fields it acts on (and whether `host` came once, as HTTP/1.1 requires). The others
/// (an SDK sends a dozen: `user-agent`, `x-stainless-…`, `accept`) are checked by the
/// parser and dropped. A class: the head travels through the connection's states and the
/// request as one reference.
public final class RequestHead<Route: RequestRoute>: HTTP1Head {
    /// The method, any token (`POST` and `GET` without a `String`).
    public let method: HTTPMethod
    /// The request target in origin form: as sent, or the path and query of an
    /// absolute-form target (`http://host/v1/models` → `/v1/models`), which RFC 9112
    /// §3.2.2 has a server accept.
    public let uri: String
    /// The route ``uri`` matches, found once per request.
    public let route: Route
    /// HTTP/1.0 or HTTP/1.1.
    public let version: HTTPVersion
    /// The `authorization` field (a second one fails the head: which would count?).
    public private(set) var authorization: String?
    private var authorizations = 0
    private var hosts = 0
    /// The first `x-api-key` field (Anthropic's clients send their key there).
    public private(set) var apiKey: String?
    /// The first `anthropic-version` field (passed on to the upstream).
    public private(set) var anthropicVersion: String?
    /// The first `x-request-id` field (the gateway decides whether it is used).
    public private(set) var requestID: String?
    /// The first field named ``SessionField/name``: the session routing keeps on one upstream
    /// (at most 256 bytes of it).
    public private(set) var sessionID: String?
    /// The first `expect` field is `100-continue` (any case).
    public private(set) var expectsContinue = false
    private var expectSeen = false
    /// `content-length` as the parser checked it (one, of digits), else 0.
    public private(set) var contentLength = 0
    /// `transfer-encoding: chunked`.
    public private(set) var isChunked = false
    /// The first `content-type` field, kept only when the route asks for it
    /// (``RequestRoute/keepsContentType``: an upload's boundary), at most 512 bytes of it.
    public private(set) var contentType: String?
    /// How many `content-type` fields came (counted only when ``contentType`` is kept).
    public private(set) var contentTypeCount = 0

    /// A body follows the head.
    public var hasBody: Bool { contentLength > 0 || isChunked }
    /// What the `connection` fields say; nil when none says `close` or `keep-alive`.
    private var connection: Bool?

    /// `method SP request-target SP HTTP-version`.
    public init(startLine line: UnsafeRawBufferPointer) throws(HTTP1ParseError) {
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

    /// Keeps the fields the gateway acts on, the first of each name (counting `host` and
    /// `authorization`).
    public func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        switch name.count {
        case 13 where name.isName("authorization"):
            authorizations += 1
            if authorization == nil { authorization = String(decoding: value, as: UTF8.self) }
        case 4 where name.isName("host"):
            hosts += 1
        case 9 where name.isName("x-api-key"):
            if apiKey == nil { apiKey = String(decoding: value, as: UTF8.self) }
        case 17 where name.isName("anthropic-version"):
            if anthropicVersion == nil { anthropicVersion = String(decoding: value.prefix(64), as: UTF8.self) }
        case 12 where name.isName("x-request-id"):
            if requestID == nil { requestID = String(decoding: value, as: UTF8.self) }
        case 10 where name.isName("connection"):
            connection = combineConnection(connection, value)
        case 12 where route.keepsContentType && name.isName("content-type"):
            contentTypeCount += 1
            if contentType == nil { contentType = String(decoding: value.prefix(512), as: UTF8.self) }
        case 6 where name.isName("expect"):
            if !expectSeen {
                expectSeen = true
                expectsContinue = value.isToken("100-continue")
            }
        default:
            if sessionID == nil, name.count == SessionField.name.count, SessionField.name.withUnsafeBytes({ name.isName($0) }) {
                sessionID = String(decoding: value.prefix(256), as: UTF8.self)
            }
        }
    }

    /// Whether the connection stays open after this exchange: as the client asked, else
    /// HTTP/1.1's default (open) or HTTP/1.0's (closed).
    public var keepsConnectionAlive: Bool { connection ?? (version == .http1_1) }

    /// Refuses a head without its one `Host` (HTTP/1.1) or with two `authorization`s, then
    /// frames the body as ``HTTP1Framing/ofRequest(version:contentLength:transferEncoding:)`` says.
    public func framing(contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError) -> HTTP1Framing {
        // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host (HTTP/1.0 may have none).
        guard hosts <= 1, hosts == 1 || version == .http1_0 else { throw .malformed(hosts == 0 ? "no Host field" : "more than one Host field") }
        guard authorizations <= 1 else { throw .malformed("more than one Authorization field") }
        self.contentLength = contentLength ?? 0
        let framing = try HTTP1Framing.ofRequest(version: version, contentLength: contentLength, transferEncoding: transferEncoding)
        isChunked = framing == .chunked
        return framing
    }

    /// The same request line and kept fields (the route follows from the target).
    public static func == (a: RequestHead, b: RequestHead) -> Bool {
        a === b
            || (a.method == b.method && a.uri == b.uri && a.version == b.version && a.authorization == b.authorization && a.apiKey == b.apiKey
                && a.anthropicVersion == b.anthropicVersion
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

/// The request field that carries a session id (`ROUTING_SESSION_HEADER`).
public enum SessionField {
    /// Its lower-case name (letters, digits and `-`): set once when the worker starts, before
    /// it serves anything, and only read after.
    nonisolated(unsafe) public static var name: [UInt8] = Array("x-session-id".utf8)
}
