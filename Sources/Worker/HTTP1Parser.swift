import NIOCore
import NIOHTTP1
import Shared

/// Why a message was refused. After any of them the connection's framing can no longer be
/// trusted: it is answered (a client) or failed (an upstream), then closed.
enum HTTP1ParseError: Error, Equatable, CustomStringConvertible {
    /// The start line and fields (or a trailer section) exceed the limit: 431 for a client.
    case headTooLarge
    /// Anything else that is not HTTP/1.x as RFC 9112 frames it: 400 for a client.
    case malformed(String)

    var description: String {
        switch self {
        case .headTooLarge: "head too large"
        case .malformed(let why): "malformed HTTP: \(why)"
        }
    }
}

/// How a message's body is delimited (RFC 9112 §6.3).
enum HTTP1Framing: Equatable {
    case none
    case length(Int)
    case chunked
    /// Until the connection closes (responses only).
    case untilClose
}

/// What differs between a request and a response: the start line, and how the framing
/// fields decide the body.
protocol HTTP1Head: Equatable {
    /// Builds the head from its start line (without CRLF) and its fields.
    init(startLine: UnsafeRawBufferPointer, headers: HTTPHeaders) throws(HTTP1ParseError)
    /// The body's framing, from the one `content-length` (already checked to be digits)
    /// and the one `transfer-encoding` the head had, if any.
    func framing(contentLength: Int?, transferEncoding: String?) throws(HTTP1ParseError) -> HTTP1Framing
}

/// An incremental HTTP/1.0 and 1.1 parser, for a connection's inbound bytes: ``feed(_:)``
/// what the socket read, then take ``next()`` until it returns nil (more bytes needed).
/// It yields NIO's `HTTPPart`s — a head, body slices (no copy), then the end — for every
/// message in order, pipelined ones included.
///
/// Strict where leniency lets two parsers disagree about where a message ends (request
/// smuggling): lines end in CRLF only (a bare CR or LF is refused), no space before a
/// field's colon, no obsolete line folding, control characters refused in values, one
/// `content-length` of digits only, `transfer-encoding` only as a lone `chunked` and
/// never beside a `content-length` in a request, no `transfer-encoding` in HTTP/1.0
/// requests, chunk sizes of at most 15 hex digits. Work per byte is bounded: the search
/// for a head's end resumes where it stopped, so a head trickling in byte by byte is
/// scanned once.
struct HTTP1Parser<Head: HTTP1Head> {
    typealias Part = HTTPPart<Head, ByteBuffer>

    /// The start line and fields at most (and separately, a chunked body's trailer section).
    let maxHeadBytes: Int
    /// A chunk-size line at most (size and extensions).
    static var maxChunkLineBytes: Int { 4096 }

    private enum State {
        case head
        case end
        case body(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataCRLF
        case trailers
        case untilClose
        case failed(HTTP1ParseError)
    }

    private var state = State.head
    /// Bytes received and not yet parsed.
    private var buffer: ByteBuffer?
    /// How far the search for the end of a head (or trailer section) got in `buffer`.
    private var scanned = 0

    init(maxHeadBytes: Int = 80 * 1024) {
        self.maxHeadBytes = maxHeadBytes
    }

    /// Bytes from the connection.
    mutating func feed(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        if var pending = buffer, pending.readableBytes > 0 {
            buffer = nil  // uniquely referenced while appending
            pending.writeImmutableBuffer(bytes)
            buffer = pending
        } else {
            buffer = bytes
        }
    }

    /// True when no message is under way and nothing is buffered.
    var isIdle: Bool {
        if case .head = state { (buffer?.readableBytes ?? 0) == 0 } else { false }
    }

    /// The connection closed: `.end` if the body runs until the close, else nil.
    mutating func finish() -> Part? {
        guard case .untilClose = state else { return nil }
        state = .head
        return .end(nil)
    }

    /// The next part, or nil when more bytes are needed. After an error, every call
    /// throws it again.
    mutating func next() throws(HTTP1ParseError) -> Part? {
        do throws(HTTP1ParseError) {
            return try step()
        } catch {
            state = .failed(error)
            buffer = nil
            throw error
        }
    }

    private mutating func step() throws(HTTP1ParseError) -> Part? {
        switch state {
        case .failed(let error):
            throw error
        case .end:
            state = .head
            return .end(nil)
        case .head:
            return try parseHead()
        case .body(let remaining):
            guard let slice = takeBody(upTo: remaining) else { return nil }
            let left = remaining - slice.readableBytes
            state = left == 0 ? .end : .body(remaining: left)
            return .body(slice)
        case .untilClose:
            guard let slice = takeBody(upTo: .max) else { return nil }
            return .body(slice)
        case .chunkData(let remaining):
            guard let slice = takeBody(upTo: remaining) else { return nil }
            let left = remaining - slice.readableBytes
            state = left == 0 ? .chunkDataCRLF : .chunkData(remaining: left)
            return .body(slice)
        case .chunkDataCRLF:
            guard var bytes = buffer, bytes.readableBytes >= 2 else { return nil }
            guard bytes.readInteger(as: UInt16.self) == 0x0D0A else { throw .malformed("chunk data not followed by CRLF") }
            buffer = bytes
            state = .chunkSize
            return try step()
        case .chunkSize:
            guard let size = try parseChunkSize() else { return nil }
            state = size == 0 ? .trailers : .chunkData(remaining: size)
            return try step()
        case .trailers:
            guard try skipTrailers() else { return nil }
            state = .head
            return .end(nil)
        }
    }

    /// A slice of at most `limit` buffered body bytes (nil when none is buffered).
    private mutating func takeBody(upTo limit: Int) -> ByteBuffer? {
        guard var bytes = buffer, bytes.readableBytes > 0 else { return nil }
        let slice = bytes.readSlice(length: min(limit, bytes.readableBytes))
        buffer = bytes.readableBytes > 0 ? bytes : nil
        return slice
    }

    // MARK: Heads

    private mutating func parseHead() throws(HTTP1ParseError) -> Part? {
        guard var bytes = buffer else { return nil }
        // Empty lines before a start line are skipped (RFC 9112 §2.2).
        while bytes.readableBytes >= 2, bytes.getInteger(at: bytes.readerIndex, as: UInt16.self) == 0x0D0A {
            bytes.moveReaderIndex(forwardBy: 2)
            scanned = 0
        }
        buffer = bytes
        guard let end = try findBlockEnd(in: bytes, emptyBlockAllowed: false) else { return nil }
        let (head, framing) = try bytes.withUnsafeReadableBytes { raw throws(HTTP1ParseError) in
            try Self.parseHeadBlock(UnsafeRawBufferPointer(rebasing: raw[..<(end - 2)]))
        }
        bytes.moveReaderIndex(forwardBy: end)
        buffer = bytes.readableBytes > 0 ? bytes : nil
        scanned = 0
        switch framing {
        case .none: state = .end
        case .length(let length): state = length == 0 ? .end : .body(remaining: length)
        case .chunked: state = .chunkSize
        case .untilClose: state = .untilClose
        }
        return .head(head)
    }

    /// The offset just past the CRLF CRLF that ends a block of lines starting at the
    /// reader index (or past a lone CRLF when the block may be empty); nil if not all
    /// there yet. Refuses bare CRs and LFs as it goes, and blocks over the limit.
    private mutating func findBlockEnd(in bytes: ByteBuffer, emptyBlockAllowed: Bool) throws(HTTP1ParseError) -> Int? {
        let limit = maxHeadBytes
        let from = scanned
        let found: Int? = try bytes.withUnsafeReadableBytes { raw throws(HTTP1ParseError) -> Int? in
            if emptyBlockAllowed, raw.count >= 2, raw[0] == 0x0D, raw[1] == 0x0A { return 2 }
            var i = from
            while i < raw.count {
                let byte = raw[i]
                if byte == 0x0A {
                    guard i > 0, raw[i - 1] == 0x0D else { throw .malformed("bare LF") }
                    if i >= 3, raw[i - 2] == 0x0A {
                        guard i < limit else { throw .headTooLarge }
                        return i + 1
                    }
                } else if raw[i] == 0x0D, i + 1 < raw.count, raw[i + 1] != 0x0A {
                    throw .malformed("bare CR")
                }
                i += 1
                if i > limit { throw .headTooLarge }
            }
            return nil
        }
        if found == nil { scanned = max(0, bytes.readableBytes - 1) }
        return found
    }

    private static func parseHeadBlock(_ raw: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> (Head, HTTP1Framing) {
        // `raw` is the start line and the field lines, each but the last ending in CRLF.
        var lineStart = 0
        var startLine: UnsafeRawBufferPointer?
        var fields: [(String, String)] = []
        fields.reserveCapacity(8)
        var contentLength: String?
        var contentLengths = 0
        var transferEncoding: String?
        var transferEncodings = 0
        while lineStart < raw.count {
            var lineEnd = lineStart
            while lineEnd < raw.count, raw[lineEnd] != 0x0D { lineEnd += 1 }
            let line = UnsafeRawBufferPointer(rebasing: raw[lineStart..<lineEnd])
            lineStart = lineEnd + 2
            guard startLine != nil else {
                startLine = line
                continue
            }
            let (name, value) = try parseField(line)
            fields.append((name, value))
            if Self.isField(line, named: "content-length") {
                contentLengths += 1
                contentLength = value
            } else if Self.isField(line, named: "transfer-encoding") {
                transferEncodings += 1
                transferEncoding = value
            }
        }
        guard let startLine else { throw .malformed("no start line") }
        guard contentLengths <= 1 else { throw .malformed("more than one content-length") }
        guard transferEncodings <= 1 else { throw .malformed("more than one transfer-encoding") }
        var length: Int?
        if let contentLength {
            guard (1...18).contains(contentLength.utf8.count) else { throw .malformed("content-length is not a number") }
            var value = 0
            for byte in contentLength.utf8 {
                guard byte >= 0x30 && byte <= 0x39 else { throw .malformed("content-length is not a number") }
                value = value * 10 + Int(byte - 0x30)
            }
            length = value
        }
        let head = try Head(startLine: startLine, headers: HTTPHeaders(fields))
        return (head, try head.framing(contentLength: length, transferEncoding: transferEncoding))
    }

    /// `name ":" OWS value OWS`, the name a token, the value without control characters.
    private static func parseField(_ line: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> (String, String) {
        var colon = 0
        while colon < line.count, line[colon] != UInt8(ascii: ":") {
            guard isTokenByte(line[colon]) else {
                throw colon == 0 && (line.first == 0x20 || line.first == 0x09)
                    ? .malformed("obsolete line folding") : .malformed("invalid field name")
            }
            colon += 1
        }
        guard colon > 0, colon < line.count else { throw .malformed("field without name or colon") }
        var start = colon + 1
        var end = line.count
        while start < end, line[start] == 0x20 || line[start] == 0x09 { start += 1 }
        while end > start, line[end - 1] == 0x20 || line[end - 1] == 0x09 { end -= 1 }
        for i in start..<end {
            let byte = line[i]
            guard byte >= 0x20 || byte == 0x09, byte != 0x7F else { throw .malformed("control character in a field value") }
        }
        let name = String(decoding: UnsafeRawBufferPointer(rebasing: line[..<colon]), as: UTF8.self)
        let value = String(decoding: UnsafeRawBufferPointer(rebasing: line[start..<end]), as: UTF8.self)
        return (name, value)
    }

    /// True if a field line's name is `name` (lowercase ASCII), in any case.
    private static func isField(_ line: UnsafeRawBufferPointer, named name: StaticString) -> Bool {
        let count = name.utf8CodeUnitCount
        guard line.count > count, line[count] == UInt8(ascii: ":") else { return false }
        let lower = name.utf8Start
        for i in 0..<count where line[i] | 0x20 != lower[i] { return false }
        return true
    }

    /// RFC 9110 `tchar`.
    static func isTokenByte(_ byte: UInt8) -> Bool {
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

    // MARK: Chunked bodies

    /// `chunk-size [ chunk-ext ] CRLF`: the size, or nil if the line is not all there.
    /// Extensions are skipped; whitespace is allowed only before one (RFC 9112 `BWS`).
    private mutating func parseChunkSize() throws(HTTP1ParseError) -> Int? {
        guard var bytes = buffer else { return nil }
        let parsed: (size: Int, lineLength: Int)? = try bytes.withUnsafeReadableBytes { raw throws(HTTP1ParseError) in
            let count = min(raw.count, Self.maxChunkLineBytes)
            var i = 0
            var size = 0
            while i < count, let digit = raw[i].hexDigitValue {
                guard i < 15 else { throw .malformed("chunk size too large") }
                size = size << 4 | Int(digit)
                i += 1
            }
            if i < count {
                guard i > 0 else { throw .malformed("chunk size is not hex") }
                let digitsEnd = i
                while i < count, raw[i] == 0x20 || raw[i] == 0x09 { i += 1 }
                if i < count, raw[i] == UInt8(ascii: ";") {
                    while i < count, raw[i] != 0x0D {
                        guard raw[i] >= 0x20 || raw[i] == 0x09, raw[i] != 0x7F else { throw .malformed("control character in a chunk line") }
                        i += 1
                    }
                } else if i < count, i > digitsEnd {
                    throw .malformed("whitespace after a chunk size")
                }
            }
            guard i + 1 < count else {
                if raw.count >= Self.maxChunkLineBytes { throw .malformed("chunk line too long") }
                return nil
            }
            guard raw[i] == 0x0D, raw[i + 1] == 0x0A else { throw .malformed("chunk line not ended by CRLF") }
            return (size, i + 2)
        }
        guard let parsed else { return nil }
        bytes.moveReaderIndex(forwardBy: parsed.lineLength)
        buffer = bytes.readableBytes > 0 ? bytes : nil
        return parsed.size
    }

    /// Skips the trailer section after the last chunk (its fields are not used); false if
    /// it is not all there yet.
    private mutating func skipTrailers() throws(HTTP1ParseError) -> Bool {
        guard var bytes = buffer else { return false }
        guard let end = try findBlockEnd(in: bytes, emptyBlockAllowed: true) else { return false }
        if end > 2 {
            // Each trailer line must still be a well-formed field.
            try bytes.withUnsafeReadableBytes { raw throws(HTTP1ParseError) in
                var lineStart = 0
                while lineStart < end - 2 {
                    var lineEnd = lineStart
                    while raw[lineEnd] != 0x0D { lineEnd += 1 }
                    _ = try Self.parseField(UnsafeRawBufferPointer(rebasing: raw[lineStart..<lineEnd]))
                    lineStart = lineEnd + 2
                }
            }
        }
        bytes.moveReaderIndex(forwardBy: end)
        buffer = bytes.readableBytes > 0 ? bytes : nil
        scanned = 0
        return true
    }
}

// MARK: Start lines

/// `HTTP/1.0` or `HTTP/1.1` at the start of `bytes`; other versions are refused.
private func parseVersion(_ bytes: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> HTTPVersion {
    let prefix: StaticString = "HTTP/1."
    guard bytes.count == 8, (0..<7).allSatisfy({ bytes[$0] == prefix.utf8Start[$0] }) else { throw .malformed("not HTTP/1.x") }
    switch bytes[7] {
    case UInt8(ascii: "1"): return .http1_1
    case UInt8(ascii: "0"): return .http1_0
    default: throw .malformed("HTTP version not supported")
    }
}

extension HTTPRequestHead: HTTP1Head {
    /// `method SP request-target SP HTTP-version`.
    init(startLine line: UnsafeRawBufferPointer, headers: HTTPHeaders) throws(HTTP1ParseError) {
        guard let firstSpace = line.firstIndex(of: 0x20), firstSpace > 0,
            let lastSpace = line.lastIndex(of: 0x20), lastSpace > firstSpace + 1
        else { throw .malformed("invalid request line") }
        let method = UnsafeRawBufferPointer(rebasing: line[..<firstSpace])
        let target = UnsafeRawBufferPointer(rebasing: line[(firstSpace + 1)..<lastSpace])
        guard method.allSatisfy(HTTP1Parser<Self>.isTokenByte) else { throw .malformed("invalid method") }
        // Visible ASCII only: no spaces, controls or raw non-ASCII in the target; and one of
        // RFC 9112's forms: origin (`/…`), absolute (`http://…`), asterisk, or authority
        // (CONNECT only).
        guard target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw .malformed("invalid request target") }
        let isConnect = method.elementsEqual("CONNECT".utf8)
        guard
            target[0] == UInt8(ascii: "/") || (target.count == 1 && target[0] == UInt8(ascii: "*")) || isConnect
                || Self.isAbsoluteForm(target)
        else { throw .malformed("invalid request target") }
        let version = try parseVersion(UnsafeRawBufferPointer(rebasing: line[(lastSpace + 1)...]))
        self.init(
            version: version, method: HTTPMethod(rawValue: String(decoding: method, as: UTF8.self)),
            uri: String(decoding: target, as: UTF8.self), headers: headers)
    }

    /// `http://` or `https://`, in any case.
    private static func isAbsoluteForm(_ target: UnsafeRawBufferPointer) -> Bool {
        for scheme in ["http://", "https://"] where target.count > scheme.utf8.count {
            if zip(target, scheme.utf8).allSatisfy({ $0 | 0x20 == $1 | 0x20 }) { return true }
        }
        return false
    }

    func framing(contentLength: Int?, transferEncoding: String?) throws(HTTP1ParseError) -> HTTP1Framing {
        if let transferEncoding {
            // RFC 9112 §6.1: a 1.0 request with transfer-encoding has faulty framing, and
            // one with content-length too is how requests are smuggled. Only a lone
            // `chunked` is understood.
            guard version == .http1_1 else { throw .malformed("transfer-encoding in an HTTP/1.0 request") }
            guard contentLength == nil else { throw .malformed("both content-length and transfer-encoding") }
            guard transferEncoding.utf8.isToken("chunked") else {
                throw .malformed("transfer-encoding other than chunked")
            }
            return .chunked
        }
        if let contentLength, contentLength > 0 { return .length(contentLength) }
        return .none
    }
}

extension HTTPResponseHead: HTTP1Head {
    /// `HTTP-version SP status-code [SP reason-phrase]`.
    init(startLine line: UnsafeRawBufferPointer, headers: HTTPHeaders) throws(HTTP1ParseError) {
        guard line.count >= 12, line[8] == 0x20, line[9...11].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            line.count == 12 || line[12] == 0x20
        else { throw .malformed("invalid status line") }
        let version = try parseVersion(UnsafeRawBufferPointer(rebasing: line[..<8]))
        let code = line[9...11].reduce(0) { $0 * 10 + Int($1 - 0x30) }
        guard code >= 100 else { throw .malformed("invalid status code") }
        self.init(version: version, status: HTTPResponseStatus(statusCode: code), headers: headers)
    }

    /// RFC 9112 §6.3 for a response to a request other than HEAD or CONNECT (the gateway
    /// sends neither upstream).
    func framing(contentLength: Int?, transferEncoding: String?) throws(HTTP1ParseError) -> HTTP1Framing {
        let code = status.code
        if code < 200 || code == 204 || code == 304 { return .none }
        if let transferEncoding {
            // Chunked only if it is the last coding applied.
            let utf8 = transferEncoding.utf8
            let last = utf8.lastIndex(of: UInt8(ascii: ",")).map { utf8.index(after: $0) } ?? utf8.startIndex
            return utf8[last...].isToken("chunked") ? .chunked : .untilClose
        }
        if let contentLength { return contentLength > 0 ? .length(contentLength) : .none }
        return .untilClose
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

// MARK: Keep-alive

extension HTTPHeaders {
    /// What the `connection` fields say: `close` wins over `keep-alive`; nil if neither is
    /// there. NIO's `isKeepAlive` decides the same but splits the fields into new strings.
    var connectionKeepAlive: Bool? {
        var keepAlive: Bool?
        for (name, value) in self where name.utf8.count == 10 && name.utf8.elementsEqual("connection".utf8, by: { $0 | 0x20 == $1 }) {
            var value = value
            let says: Bool? = value.withUTF8 { bytes in
                var says: Bool?
                var start = 0
                while start < bytes.count {
                    var end = start
                    while end < bytes.count && bytes[end] != UInt8(ascii: ",") { end += 1 }
                    let token = UnsafeBufferPointer(rebasing: bytes[start..<end])
                    start = end + 1
                    if token.isToken("close") { return false }
                    if token.isToken("keep-alive") { says = true }
                }
                return says
            }
            if says == false { return false }
            if says == true { keepAlive = true }
        }
        return keepAlive
    }
}

extension HTTPRequestHead {
    /// Whether the connection stays open after this exchange: as the client asked, else
    /// HTTP/1.1's default (open) or HTTP/1.0's (closed).
    var keepsConnectionAlive: Bool { headers.connectionKeepAlive ?? (version == .http1_1) }
}

extension HTTPResponseHead {
    /// Whether the connection stays open after this response (as for requests).
    var keepsConnectionAlive: Bool { headers.connectionKeepAlive ?? (version == .http1_1) }
}
