import NIOHTTP1

/// What differs between a request and a response for ``HTTP1Parser``: the start line, the
/// fields a head keeps, and how the framing fields decide the body.
///
/// The parser checks every field line (name a token, value without control characters),
/// then hands it to ``add(name:value:)``; a head keeps what it acts on and drops the rest,
/// so a field nobody reads costs no `String`.
public protocol HTTP1Head: Equatable {
    /// The head of a message with this start line (without CRLF).
    init(startLine: UnsafeRawBufferPointer) throws(HTTP1ParseError)
    /// One checked field: its name, and its value without surrounding whitespace.
    mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)
    /// The body's framing, from the one `content-length` (already checked to be digits)
    /// and the one `transfer-encoding` value the head had, if any. Called once, after the
    /// fields: a head may keep the length, and refuse a head that lacks a field it needs.
    mutating func framing(contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError) -> HTTP1Framing
}

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
