import NIOCore
import NIOHTTP1

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
/// requests, chunk sizes of at most 15 hex digits (and ``RequestHead`` wants one `Host` in
/// every HTTP/1.1 request). Where this differs from llhttp (NIO's and Node's parser), case
/// by case and why: docs/http1-parser.md. Work per byte is bounded: the search for a
/// head's end resumes where it stopped, so a head trickling in byte by byte is scanned once.
public struct HTTP1Parser<Head: HTTP1Head> {
    /// A head, a slice of body, or a message's end (trailers are checked, not kept).
    public typealias Part = HTTPPart<Head, ByteBuffer>

    /// The start line and fields at most (and separately, a chunked body's trailer section).
    public let maxHeadBytes: Int
    /// A chunk-size line at most (size and extensions).
    public static var maxChunkLineBytes: Int { 4096 }

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

    /// A parser for one connection; `maxHeadBytes` bounds each head and trailer section.
    public init(maxHeadBytes: Int = 80 * 1024) {
        self.maxHeadBytes = maxHeadBytes
    }

    /// Bytes from the connection.
    public mutating func feed(_ bytes: ByteBuffer) {
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
    public var isIdle: Bool {
        if case .head = state { (buffer?.readableBytes ?? 0) == 0 } else { false }
    }

    /// The connection closed: `.end` if the body runs until the close, else nil.
    public mutating func finish() -> Part? {
        guard case .untilClose = state else { return nil }
        state = .head
        return .end(nil)
    }

    /// The next part, or nil when more bytes are needed. After an error, every call
    /// throws it again.
    public mutating func next() throws(HTTP1ParseError) -> Part? {
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
                // Eight bytes at a time while none of them is below 0x0E (no CR, no LF): the
                // text of the lines. A word has such a byte iff this borrow trick sets a high bit.
                while i + 8 <= raw.count {
                    let word = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    guard (word &- 0x0E0E_0E0E_0E0E_0E0E) & ~word & 0x8080_8080_8080_8080 == 0 else { break }
                    i += 8
                }
                if i > limit { throw .headTooLarge }
                guard i < raw.count else { break }
                let byte = raw[i]
                if byte == 0x0A {
                    guard i > 0, raw[i - 1] == 0x0D else { throw .malformed("bare LF") }
                    if i >= 3, raw[i - 2] == 0x0A {
                        guard i < limit else { throw .headTooLarge }
                        return i + 1
                    }
                } else if byte == 0x0D {
                    // A CR last is decided by the next byte: scanning stops at it, so that
                    // the limit is not checked first (a split must not change the error).
                    guard i + 1 < raw.count else { break }
                    guard raw[i + 1] == 0x0A else { throw .malformed("bare CR") }
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
        var lineEnd = 0
        while lineEnd < raw.count, raw[lineEnd] != 0x0D { lineEnd += 1 }
        var head = try Head(startLine: UnsafeRawBufferPointer(rebasing: raw[..<lineEnd]))
        var lineStart = lineEnd + 2
        var contentLength: UnsafeRawBufferPointer?
        var contentLengths = 0
        var transferEncoding: UnsafeRawBufferPointer?
        var transferEncodings = 0
        while lineStart < raw.count {
            var lineEnd = lineStart
            while lineEnd < raw.count, raw[lineEnd] != 0x0D { lineEnd += 1 }
            let (name, value) = try parseField(UnsafeRawBufferPointer(rebasing: raw[lineStart..<lineEnd]))
            lineStart = lineEnd + 2
            if name.isName("content-length") {
                contentLengths += 1
                contentLength = value
            } else if name.isName("transfer-encoding") {
                transferEncodings += 1
                transferEncoding = value
            }
            head.add(name: name, value: value)
        }
        guard contentLengths <= 1 else { throw .malformed("more than one content-length") }
        guard transferEncodings <= 1 else { throw .malformed("more than one transfer-encoding") }
        var length: Int?
        if let contentLength {
            guard (1...18).contains(contentLength.count) else { throw .malformed("content-length is not a number") }
            var value = 0
            for byte in contentLength {
                guard byte >= 0x30 && byte <= 0x39 else { throw .malformed("content-length is not a number") }
                value = value * 10 + Int(byte - 0x30)
            }
            length = value
        }
        // Framing first: a head may keep what it learns there (a struct head's copy in the
        // tuple would be taken before it did).
        let framing = try head.framing(contentLength: length, transferEncoding: transferEncoding)
        return (head, framing)
    }

    /// `name ":" OWS value OWS`, the name a token, the value without control characters.
    private static func parseField(_ line: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> (
        name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer
    ) {
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
        return (UnsafeRawBufferPointer(rebasing: line[..<colon]), UnsafeRawBufferPointer(rebasing: line[start..<end]))
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

extension UInt8 {
    /// The value of this ASCII hex digit (`0-9`, `a-f`, `A-F`), or nil.
    fileprivate var hexDigitValue: UInt8? {
        switch self {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): self - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): self - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): self - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
