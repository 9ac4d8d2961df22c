import NIOCore

/// Reads RESP2 replies from the bytes a connection receives, however they are split into
/// reads or coalesced, keeping the arrays it is inside of between reads so nothing is
/// parsed twice. Bounded: a declared length or count above ``Limits``, nesting deeper than
/// ``Limits/maxDepth``, a line without its end past ``Limits/maxLineLength`` or a reply
/// past ``Limits/maxReplyBytes`` is a ``RedisError/protocolViolation(_:)`` (the handler then
/// closes the connection), decided before the bytes are waited for.
public struct RESPDecoder: NIOSingleStepByteToMessageDecoder {
    /// One reply.
    public typealias InboundOut = RESPValue

    /// The most one reply may declare or take.
    public struct Limits: Sendable, Hashable {
        /// Longest bulk string (16 MiB by default).
        public var maxBulkLength = 16 * 1024 * 1024
        /// Most array elements in one reply, its nested arrays included (1 Mi by default).
        public var maxElements = 1 << 20
        /// Deepest nesting of arrays (8 by default; a top-level array is depth 1).
        public var maxDepth = 8
        /// Longest status, error or integer line, or length header (64 KiB by default).
        public var maxLineLength = 64 * 1024
        /// Most bytes of one reply, all of its parts together (64 MiB by default).
        public var maxReplyBytes = 64 * 1024 * 1024

        /// The defaults above.
        public init() {}
    }

    /// An array whose elements are still arriving.
    private struct OpenArray {
        var remaining: Int
        var elements: [RESPValue]
    }

    private enum Token {
        case value(RESPValue)
        case arrayHeader(count: Int)
    }

    /// What one reply may declare or take.
    public let limits: Limits
    /// Outermost first.
    private var open: [OpenArray] = []
    /// Elements declared and bytes read so far by the reply under way.
    private var elements = 0
    private var replyBytes = 0

    /// A decoder that refuses what exceeds `limits`.
    public init(limits: Limits = Limits()) { self.limits = limits }

    /// The next whole reply, or nil until its bytes have come; throws ``RedisError`` when
    /// they are not RESP2 or exceed ``limits``.
    public mutating func decode(buffer: inout ByteBuffer) throws -> RESPValue? {
        while let token = try readToken(&buffer) {
            var value: RESPValue
            switch token {
            case .value(let scalar):
                value = scalar
            case .arrayHeader(let count) where count == 0:
                value = .array([])
            case .arrayHeader(let count):
                guard open.count < limits.maxDepth else {
                    throw RedisError.protocolViolation("arrays nested deeper than \(limits.maxDepth)")
                }
                open.append(OpenArray(remaining: count, elements: []))
                open[open.count - 1].elements.reserveCapacity(min(count, 64))
                continue
            }
            // A value completes the arrays it ends, innermost first.
            while !open.isEmpty {
                let last = open.count - 1
                open[last].elements.append(value)
                open[last].remaining -= 1
                guard open[last].remaining == 0 else { break }
                value = .array(open.removeLast().elements)
            }
            if open.isEmpty {
                elements = 0
                replyBytes = 0
                return value
            }
        }
        return nil
    }

    /// As ``decode(buffer:)``; a reply cut short by the close is dropped.
    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPValue? {
        try decode(buffer: &buffer)
    }

    /// The next scalar or array header, consumed; nil (nothing consumed) until all its bytes came.
    private mutating func readToken(_ buffer: inout ByteBuffer) throws(RedisError) -> Token? {
        guard let (type, line, lineLength) = try peekLine(buffer) else { return nil }
        let token: Token
        var consumed = lineLength
        switch type {
        case UInt8(ascii: "+"):
            token = .value(.simpleString(String(decoding: line, as: UTF8.self)))
        case UInt8(ascii: "-"):
            token = .value(.error(String(decoding: line, as: UTF8.self)))
        case UInt8(ascii: ":"):
            token = .value(.integer(try Self.integer(line, of: "integer")))
        case UInt8(ascii: "$"):
            let length = try Self.integer(line, of: "bulk string length")
            if length == -1 {
                token = .value(.bulkString(nil))
                break
            }
            guard length >= 0 else { throw .protocolViolation("negative bulk string length \(length)") }
            guard length <= Int64(limits.maxBulkLength) else {
                throw .protocolViolation("bulk string length \(length) above the limit \(limits.maxBulkLength)")
            }
            consumed += Int(length) + 2
            guard replyBytes + consumed <= limits.maxReplyBytes else {
                throw .protocolViolation("reply larger than the limit \(limits.maxReplyBytes) bytes")
            }
            guard buffer.readableBytes >= consumed else { return nil }
            let end = buffer.readerIndex + consumed
            guard buffer.getInteger(at: end - 2, as: UInt16.self) == 0x0D0A else {
                throw .protocolViolation("bulk string not followed by CRLF")
            }
            token = .value(.bulkString(buffer.getSlice(at: buffer.readerIndex + lineLength, length: Int(length))))
        case UInt8(ascii: "*"):
            let count = try Self.integer(line, of: "array count")
            if count == -1 {
                token = .value(.array(nil))
                break
            }
            guard count >= 0 else { throw .protocolViolation("negative array count \(count)") }
            guard count <= Int64(limits.maxElements - elements) else {
                throw .protocolViolation("more than \(limits.maxElements) array elements in one reply")
            }
            elements += Int(count)
            token = .arrayHeader(count: Int(count))
        default:
            throw .protocolViolation("unknown type byte 0x\(String(type, radix: 16))")
        }
        replyBytes += consumed
        guard replyBytes <= limits.maxReplyBytes else {
            throw .protocolViolation("reply larger than the limit \(limits.maxReplyBytes) bytes")
        }
        buffer.moveReaderIndex(forwardBy: consumed)
        return token
    }

    /// The type byte, the bytes after it up to CRLF, and the line's length with its CRLF;
    /// nil while the CRLF has not arrived.
    private func peekLine(_ buffer: ByteBuffer) throws(RedisError) -> (UInt8, ByteBufferView, Int)? {
        let view = buffer.readableBytesView
        guard let type = view.first else { return nil }
        let searched = view.prefix(limits.maxLineLength + 2)
        guard let cr = searched.firstIndex(of: UInt8(ascii: "\r")) else {
            guard view.count <= limits.maxLineLength + 1 else {
                throw .protocolViolation("line longer than the limit \(limits.maxLineLength) bytes")
            }
            return nil
        }
        let lf = view.index(after: cr)
        guard lf < view.endIndex else { return nil }
        guard view[lf] == UInt8(ascii: "\n") else { throw .protocolViolation("CR not followed by LF") }
        return (type, view[view.index(after: view.startIndex)..<cr], lf + 1 - view.startIndex)
    }

    /// A decimal integer (`-` allowed), as RESP writes lengths, counts and integer replies.
    private static func integer(_ digits: ByteBufferView, of what: String) throws(RedisError) -> Int64 {
        var bytes = digits[...]
        let negative = bytes.first == UInt8(ascii: "-")
        if negative { bytes = bytes.dropFirst() }
        guard !bytes.isEmpty, bytes.count <= 19 else { throw .protocolViolation("\(what) is not a decimal integer") }
        var value: Int64 = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else {
                throw .protocolViolation("\(what) is not a decimal integer")
            }
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            // Accumulated with the sign, so Int64.min parses too.
            let digit = Int64(byte - UInt8(ascii: "0"))
            let (next, overflow2) = negative ? times10.subtractingReportingOverflow(digit) : times10.addingReportingOverflow(digit)
            guard !overflow1, !overflow2 else { throw .protocolViolation("\(what) out of range") }
            value = next
        }
        return value
    }
}
