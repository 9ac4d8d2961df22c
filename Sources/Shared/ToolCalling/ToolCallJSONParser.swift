/// Parses complete JSON text into a ``ToolCallJSONValue``.
///
/// Follows the same grammar as ``ToolCallJSONScanner`` (raw control characters allowed in
/// strings, nesting limited to ``ToolCallJSONScanner/maximumDepth``) but accepts any
/// top-level value. Lone surrogate escapes decode to U+FFFD.
struct ToolCallJSONParser {
    private let bytes: [UInt8]
    private var position = 0
    private var depth = 0

    private init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// The value `bytes` hold, or `nil` unless they are exactly one JSON value plus whitespace.
    static func parse(_ bytes: [UInt8]) -> ToolCallJSONValue? {
        var parser = ToolCallJSONParser(bytes)
        guard let value = parser.parseValue() else { return nil }
        parser.skipWhitespace()
        return parser.position == bytes.count ? value : nil
    }

    /// The value `text` holds, or `nil` unless it is exactly one JSON value plus whitespace.
    static func parse(_ text: String) -> ToolCallJSONValue? {
        parse(Array(text.utf8))
    }

    private var current: UInt8? {
        position < bytes.count ? bytes[position] : nil
    }

    private mutating func skipWhitespace() {
        while let byte = current, ToolCallBytes.isWhitespace(byte) { position += 1 }
    }

    private mutating func consume(_ byte: UInt8) -> Bool {
        guard current == byte else { return false }
        position += 1
        return true
    }

    private mutating func parseValue() -> ToolCallJSONValue? {
        skipWhitespace()
        guard let byte = current else { return nil }
        switch byte {
        case UInt8(ascii: "{"): return parseContainer(isObject: true)
        case UInt8(ascii: "["): return parseContainer(isObject: false)
        case UInt8(ascii: "\""): return parseString().map(ToolCallJSONValue.string)
        case UInt8(ascii: "t"): return parseWord("true", as: .bool(true))
        case UInt8(ascii: "f"): return parseWord("false", as: .bool(false))
        case UInt8(ascii: "n"): return parseWord("null", as: .null)
        default: return parseNumber()
        }
    }

    private mutating func parseWord(_ word: String, as value: ToolCallJSONValue) -> ToolCallJSONValue? {
        for byte in word.utf8 {
            guard consume(byte) else { return nil }
        }
        return value
    }

    private mutating func parseContainer(isObject: Bool) -> ToolCallJSONValue? {
        guard depth < ToolCallJSONScanner.maximumDepth else { return nil }
        depth += 1
        defer { depth -= 1 }
        position += 1
        let closer = UInt8(ascii: isObject ? "}" : "]")
        var members: [ToolCallJSONValue.Member] = []
        var elements: [ToolCallJSONValue] = []
        skipWhitespace()
        if !consume(closer) {
            repeat {
                if isObject {
                    skipWhitespace()
                    guard current == UInt8(ascii: "\""), let key = parseString() else { return nil }
                    skipWhitespace()
                    guard consume(UInt8(ascii: ":")), let value = parseValue() else { return nil }
                    members.append(.init(key: key, value: value))
                } else {
                    guard let value = parseValue() else { return nil }
                    elements.append(value)
                }
                skipWhitespace()
            } while consume(UInt8(ascii: ","))
            guard consume(closer) else { return nil }
        }
        return isObject ? .object(members) : .array(elements)
    }

    private mutating func parseNumber() -> ToolCallJSONValue? {
        let start = position
        _ = consume(UInt8(ascii: "-"))
        if !consume(UInt8(ascii: "0")) {
            guard let byte = current, ToolCallBytes.isDigit(byte) else { return nil }
            skipDigits()
        }
        if consume(UInt8(ascii: ".")) {
            guard let byte = current, ToolCallBytes.isDigit(byte) else { return nil }
            skipDigits()
        }
        if consume(UInt8(ascii: "e")) || consume(UInt8(ascii: "E")) {
            if !consume(UInt8(ascii: "+")) { _ = consume(UInt8(ascii: "-")) }
            guard let byte = current, ToolCallBytes.isDigit(byte) else { return nil }
            skipDigits()
        }
        return .number(String(decoding: bytes[start..<position], as: UTF8.self))
    }

    private mutating func skipDigits() {
        while let byte = current, ToolCallBytes.isDigit(byte) { position += 1 }
    }

    /// Parses a string starting at its opening quote.
    private mutating func parseString() -> String? {
        position += 1
        var output: [UInt8] = []
        var pendingHighSurrogate: UInt32?
        while let byte = current {
            position += 1
            if byte == UInt8(ascii: "\"") {
                if pendingHighSurrogate != nil { Self.append(0xFFFD, to: &output) }
                return String(decoding: output, as: UTF8.self)
            }
            guard byte == UInt8(ascii: "\\") else {
                if pendingHighSurrogate != nil { Self.append(0xFFFD, to: &output) }
                pendingHighSurrogate = nil
                output.append(byte)
                continue
            }
            guard let escaped = current else { return nil }
            position += 1
            if escaped == UInt8(ascii: "u") {
                guard let unit = parseHex4() else { return nil }
                switch unit {
                case 0xD800..<0xDC00:
                    if pendingHighSurrogate != nil { Self.append(0xFFFD, to: &output) }
                    pendingHighSurrogate = unit
                case 0xDC00..<0xE000:
                    if let high = pendingHighSurrogate {
                        Self.append(0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00), to: &output)
                    } else {
                        Self.append(0xFFFD, to: &output)
                    }
                    pendingHighSurrogate = nil
                default:
                    if pendingHighSurrogate != nil { Self.append(0xFFFD, to: &output) }
                    pendingHighSurrogate = nil
                    Self.append(unit, to: &output)
                }
                continue
            }
            if pendingHighSurrogate != nil { Self.append(0xFFFD, to: &output) }
            pendingHighSurrogate = nil
            switch escaped {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): output.append(escaped)
            case UInt8(ascii: "b"): output.append(0x08)
            case UInt8(ascii: "f"): output.append(0x0C)
            case UInt8(ascii: "n"): output.append(0x0A)
            case UInt8(ascii: "r"): output.append(0x0D)
            case UInt8(ascii: "t"): output.append(0x09)
            default: return nil
            }
        }
        return nil
    }

    private mutating func parseHex4() -> UInt32? {
        guard position + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for byte in bytes[position..<position + 4] {
            guard let digit = Self.hexValue(byte) else { return nil }
            value = value << 4 | digit
        }
        position += 4
        return value
    }

    private static func hexValue(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    private static func append(_ scalar: UInt32, to output: inout [UInt8]) {
        output.append(contentsOf: String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8)
    }
}
