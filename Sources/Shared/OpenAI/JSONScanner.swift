/// A validating, allocation-light JSON scanner for request and response bodies the
/// gateway only needs to look into, not rebuild: it checks the whole document (RFC 8259,
/// UTF-8, nesting and number limits) and returns where each top-level member's value
/// lies, so a field such as `model` can be rewritten by splicing bytes.
public struct JSONScanner {
    /// A top-level member: its key and the byte range of its value.
    public struct Member: Sendable, Equatable {
        public var key: String
        public var value: Range<Int>
    }

    /// Why a document was refused (`message` is safe to show a client).
    public struct Failure: Error, Sendable, Equatable {
        public var message: String
        public var offset: Int
    }

    /// Deepest nesting accepted.
    public static let maxDepth = 64
    /// Longest number literal accepted (more is not a number any model needs).
    public static let maxNumberLength = 64

    private let bytes: UnsafeRawBufferPointer
    private var index: Int
    private let end: Int

    private init(_ bytes: UnsafeRawBufferPointer, range: Range<Int>) {
        self.bytes = bytes
        self.index = range.lowerBound
        self.end = range.upperBound
    }

    /// Validates `bytes[range]` as one JSON object and returns its top-level members.
    /// - Throws: ``Failure`` for anything that is not a single well-formed object, or has a
    ///   duplicate top-level key.
    public static func objectMembers(_ bytes: UnsafeRawBufferPointer, range: Range<Int>? = nil) throws -> [Member] {
        var scanner = JSONScanner(bytes, range: range ?? 0..<bytes.count)
        scanner.skipWhitespace()
        guard scanner.peek() == UInt8(ascii: "{") else { throw scanner.failure("expected a JSON object") }
        var members: [Member] = []
        members.reserveCapacity(8)
        // Duplicates: a linear look-back while the object is small (the usual request has a
        // handful of members), a set once it is not.
        var seen: Set<String>?
        try scanner.scanObject(depth: 1, decodingKeys: true) { key, value in
            let duplicate: Bool
            if var set = seen {
                seen = nil
                duplicate = !set.insert(key).inserted
                seen = set
            } else {
                duplicate = members.contains { $0.key == key }
                if members.count == 16 { seen = Set(members.map(\.key) + [key]) }
            }
            guard !duplicate else { throw Failure(message: "duplicate key '\(key)'", offset: value.lowerBound) }
            members.append(Member(key: key, value: value))
        }
        scanner.skipWhitespace()
        guard scanner.index == scanner.end else { throw scanner.failure("unexpected data after the JSON object") }
        return members
    }

    /// The number of elements of the JSON array at `range` of a document already validated
    /// (by ``objectMembers(_:range:)``); nil when the value there is not an array. One pass
    /// over the bytes: commas at the array's own depth, outside strings.
    public static func arrayCount(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard !range.isEmpty, bytes[range.lowerBound] == UInt8(ascii: "[") else { return nil }
        var depth = 0
        var commas = 0
        var sawValue = false
        var i = range.lowerBound
        while i < range.upperBound {
            let byte = bytes[i]
            switch byte {
            case UInt8(ascii: "\""):
                if depth == 1 { sawValue = true }
                i += 1
                while i < range.upperBound, bytes[i] != UInt8(ascii: "\"") {
                    i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1
                }
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                if depth == 1 { sawValue = true }
                depth += 1
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                depth -= 1
                if depth == 0 { return sawValue ? commas + 1 : 0 }
            case UInt8(ascii: ","):
                if depth == 1 { commas += 1 }
            case 0x20, 0x09, 0x0A, 0x0D:
                break
            default:
                if depth == 1 { sawValue = true }
            }
            i += 1
        }
        return nil
    }

    /// Convenience over an array.
    public static func objectMembers(_ bytes: [UInt8]) throws -> [Member] {
        try bytes.withUnsafeBytes { try objectMembers($0) }
    }

    /// Decodes the JSON string literal at `range` (quotes included); nil if it is not one.
    public static func string(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> String? {
        guard range.count >= 2, bytes[range.lowerBound] == UInt8(ascii: "\""), bytes[range.upperBound - 1] == UInt8(ascii: "\"") else {
            return nil
        }
        let inner = (range.lowerBound + 1)..<(range.upperBound - 1)
        if !bytes[inner].contains(UInt8(ascii: "\\")) {
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[inner]), as: UTF8.self)
        }
        var scalars = String.UnicodeScalarView()
        var raw: [UInt8] = []
        var i = inner.lowerBound
        func flush() {
            if !raw.isEmpty {
                scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars)
                raw.removeAll()
            }
        }
        while i < inner.upperBound {
            let c = bytes[i]
            if c != UInt8(ascii: "\\") {
                raw.append(c)
                i += 1
                continue
            }
            flush()
            i += 1
            guard i < inner.upperBound else { return nil }
            switch bytes[i] {
            case UInt8(ascii: "\""): scalars.append("\"")
            case UInt8(ascii: "\\"): scalars.append("\\")
            case UInt8(ascii: "/"): scalars.append("/")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                guard let high = hex4(bytes, i + 1, inner.upperBound) else { return nil }
                i += 4
                if (0xD800...0xDBFF).contains(high), i + 6 < inner.upperBound + 1, bytes[i + 1] == UInt8(ascii: "\\"),
                    bytes[i + 2] == UInt8(ascii: "u"), let low = hex4(bytes, i + 3, inner.upperBound), (0xDC00...0xDFFF).contains(low)
                {
                    i += 6
                    scalars.append(Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)) ?? "\u{FFFD}")
                } else {
                    scalars.append(Unicode.Scalar(high) ?? "\u{FFFD}")
                }
            default: return nil
            }
            i += 1
        }
        flush()
        return String(scalars)
    }

    private static func hex4(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ limit: Int) -> UInt32? {
        guard start + 4 <= limit else { return nil }
        var value: UInt32 = 0
        for k in start..<(start + 4) {
            guard let digit = bytes[k].hexDigitValue else { return nil }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    // MARK: - Grammar

    private func peek() -> UInt8? { index < end ? bytes[index] : nil }

    private func failure(_ message: String) -> Failure { Failure(message: message, offset: index) }

    private mutating func skipWhitespace() {
        while index < end {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func expect(_ c: UInt8, _ what: String) throws {
        guard peek() == c else { throw failure("expected \(what)") }
        index += 1
    }

    private mutating func scanObject(depth: Int) throws {
        try scanObject(depth: depth, decodingKeys: false) { _, _ in }
    }

    /// Scans an object, passing each member's key (when `decodingKeys`) and value range to
    /// `member`. The closure does not escape, so what it captures stays on the stack.
    private mutating func scanObject(depth: Int, decodingKeys: Bool, member: (String, Range<Int>) throws -> Void) throws {
        guard depth <= Self.maxDepth else { throw failure("JSON nested deeper than \(Self.maxDepth) levels") }
        try expect(UInt8(ascii: "{"), "'{'")
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            index += 1
            return
        }
        while true {
            skipWhitespace()
            let keyStart = index
            try scanString()
            let keyRange = keyStart..<index
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "':' after an object key")
            skipWhitespace()
            let valueStart = index
            try scanValue(depth: depth)
            if decodingKeys {
                try member(Self.string(bytes, keyRange) ?? "", valueStart..<index)
            }
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "}"):
                index += 1
                return
            default: throw failure("expected ',' or '}' in an object")
            }
        }
    }

    private mutating func scanArray(depth: Int) throws {
        guard depth <= Self.maxDepth else { throw failure("JSON nested deeper than \(Self.maxDepth) levels") }
        try expect(UInt8(ascii: "["), "'['")
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            index += 1
            return
        }
        while true {
            skipWhitespace()
            try scanValue(depth: depth)
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"):
                index += 1
                return
            default: throw failure("expected ',' or ']' in an array")
            }
        }
    }

    private mutating func scanValue(depth: Int) throws {
        guard let c = peek() else { throw failure("unexpected end of JSON") }
        switch c {
        case UInt8(ascii: "{"): try scanObject(depth: depth + 1)
        case UInt8(ascii: "["): try scanArray(depth: depth + 1)
        case UInt8(ascii: "\""): try scanString()
        case UInt8(ascii: "t"): try scanLiteral("true")
        case UInt8(ascii: "f"): try scanLiteral("false")
        case UInt8(ascii: "n"): try scanLiteral("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try scanNumber()
        default: throw failure("unexpected character in JSON")
        }
    }

    private mutating func scanLiteral(_ word: StaticString) throws {
        let count = word.utf8CodeUnitCount
        guard index + count <= end else { throw failure("unexpected end of JSON") }
        for k in 0..<count where bytes[index + k] != word.utf8Start[k] {
            throw failure("invalid literal in JSON")
        }
        index += count
    }

    private mutating func scanNumber() throws {
        let start = index
        if peek() == UInt8(ascii: "-") { index += 1 }
        guard let first = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { throw failure("invalid number") }
        if first == UInt8(ascii: "0") { index += 1 } else { skipDigits() }
        if peek() == UInt8(ascii: ".") {
            index += 1
            guard let d = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(d) else { throw failure("invalid number") }
            skipDigits()
        }
        if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            index += 1
            if let sign = peek(), sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { index += 1 }
            guard let d = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(d) else { throw failure("invalid number") }
            skipDigits()
        }
        guard index - start <= Self.maxNumberLength else { throw Failure(message: "number too long", offset: start) }
    }

    private mutating func skipDigits() {
        while let c = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { index += 1 }
    }

    /// A string literal, checking escapes, control characters and UTF-8.
    private mutating func scanString() throws {
        try expect(UInt8(ascii: "\""), "a string")
        while index < end {
            let c = bytes[index]
            switch c {
            case UInt8(ascii: "\""):
                index += 1
                return
            case UInt8(ascii: "\\"):
                index += 1
                guard let e = peek() else { break }
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    index += 1
                case UInt8(ascii: "u"):
                    guard Self.hex4(bytes, index + 1, end) != nil else { throw failure("invalid \\u escape") }
                    index += 5
                default: throw failure("invalid escape in a string")
                }
            case 0x00..<0x20:
                throw failure("control character in a string")
            case 0x80...0xFF:
                try scanUTF8Sequence()
            default:
                index += 1
            }
        }
        throw failure("unterminated string")
    }

    private mutating func scanUTF8Sequence() throws {
        let c = bytes[index]
        let length: Int
        let minimum: UInt32
        switch c {
        case 0xC2...0xDF: length = 2; minimum = 0x80
        case 0xE0...0xEF: length = 3; minimum = 0x800
        case 0xF0...0xF4: length = 4; minimum = 0x10000
        default: throw failure("invalid UTF-8")
        }
        guard index + length <= end else { throw failure("invalid UTF-8") }
        var scalar = UInt32(c) & (0xFF >> (length + 1))
        for k in 1..<length {
            let b = bytes[index + k]
            guard b & 0xC0 == 0x80 else { throw failure("invalid UTF-8") }
            scalar = scalar << 6 | UInt32(b & 0x3F)
        }
        guard scalar >= minimum, scalar <= 0x10FFFF, !(0xD800...0xDFFF).contains(scalar) else { throw failure("invalid UTF-8") }
        index += length
    }
}

extension UInt8 {
    /// The value of this ASCII hex digit (`0-9`, `a-f`, `A-F`), or nil.
    public var hexDigitValue: UInt8? {
        switch self {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): self - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): self - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): self - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
