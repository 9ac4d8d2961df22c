import NIOCore
import NIOHTTP1

/// Assembles the lines of an HTTP/1.1 head (a response's, an upstream request's) straight
/// into a `ByteBuffer`'s memory: the pieces are measured first, the buffer grows once, and
/// each piece is one `memcpy`. A head is some 15 to 40 pieces; writing each with
/// `writeString`/`writeStaticString` paid the buffer's capacity, uniqueness and
/// exclusivity checks per piece.
///
/// Names and values are the gateway's own or came through `HTTP1Parser` (token names, no
/// control characters in values), so they hold no CR or LF.
public struct HeadBytes {
    /// Where the bytes go; nil while measuring.
    private let base: UnsafeMutableRawPointer?
    private let capacity: Int
    /// Bytes measured or written so far.
    public private(set) var count = 0

    fileprivate init(measuring: Void) {
        base = nil
        capacity = .max
    }

    fileprivate init(into memory: UnsafeMutableRawBufferPointer) {
        base = memory.baseAddress
        capacity = memory.count
    }

    private mutating func copy(_ source: UnsafeRawPointer?, _ length: Int) {
        if let base, let source, length > 0 {
            precondition(count + length <= capacity, "head grew between measuring and writing")
            (base + count).copyMemory(from: source, byteCount: length)
        }
        count += length
    }

    /// A literal's bytes.
    public mutating func append(_ text: StaticString) {
        copy(text.utf8Start, text.utf8CodeUnitCount)
    }

    /// A string's UTF-8.
    public mutating func append(_ text: String) {
        guard base != nil else {
            count += text.utf8.count
            return
        }
        var text = text  // a native string's UTF-8 is contiguous: no copy
        text.withUTF8 { copy($0.baseAddress, $0.count) }
    }

    /// One byte.
    public mutating func append(byte: UInt8) {
        withUnsafeBytes(of: byte) { copy($0.baseAddress, 1) }
    }

    /// A non-negative integer in decimal.
    public mutating func append(decimal value: Int) {
        precondition(value >= 0)
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        guard let base else {
            count += digits
            return
        }
        precondition(count + digits <= capacity, "head grew between measuring and writing")
        var value = value
        for position in stride(from: count + digits - 1, through: count, by: -1) {
            base.storeBytes(of: UInt8(truncatingIfNeeded: 0x30 + value % 10), toByteOffset: position, as: UInt8.self)
            value /= 10
        }
        count += digits
    }

    /// A non-negative integer in lower-case hex, at least one digit (a chunk size).
    public mutating func append(hex value: Int) {
        precondition(value >= 0)
        let digits = max(1, (Int.bitWidth - value.leadingZeroBitCount + 3) / 4)
        guard let base else {
            count += digits
            return
        }
        precondition(count + digits <= capacity, "head grew between measuring and writing")
        for index in 0..<digits {
            let digit = UInt8(truncatingIfNeeded: value >> (4 * (digits - 1 - index))) & 0xF
            base.storeBytes(of: digit < 10 ? 0x30 + digit : 0x57 + digit, toByteOffset: count + index, as: UInt8.self)
        }
        count += digits
    }

    /// `HTTP/1.1 200 OK` and its line end (`HTTP/1.0` for an HTTP/1.0 client).
    public mutating func statusLine(_ status: Int, version: HTTPVersion, reason: String) {
        append(version.major == 1 && version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        append(decimal: status)
        append(byte: UInt8(ascii: " "))
        append(reason)
        append("\r\n")
    }

    /// `name: value` and its line end.
    public mutating func field(_ name: String, _ value: String) {
        append(name)
        append(": ")
        append(value)
        append("\r\n")
    }
}

extension ByteBuffer {
    /// Appends what `build` puts into a ``HeadBytes``. `build` runs twice, first to measure
    /// and then to write, so it must append the same pieces both times (it only reads).
    public mutating func writeHead(_ build: (inout HeadBytes) -> Void) {
        var measure = HeadBytes(measuring: ())
        build(&measure)
        let size = measure.count
        writeWithUnsafeMutableBytes(minimumWritableBytes: size) { memory in
            var head = HeadBytes(into: UnsafeMutableRawBufferPointer(rebasing: memory[..<size]))
            build(&head)
            precondition(head.count == size, "head grew between measuring and writing")
            return size
        }
    }
}
