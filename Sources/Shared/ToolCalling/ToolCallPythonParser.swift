/// Parses a complete pythonic call list, `[f(a=1, b="x"), g()]`, into calls whose arguments
/// are JSON objects.
///
/// Values are Python literals: `'…'`/`"…"` strings with Python escapes (no prefixes, no
/// triple quotes, no implicit concatenation), integers and floats (underscores allowed; no
/// hex, octal or complex), `True`/`False`/`None` (and JSON's spellings), lists and tuples
/// (JSON arrays), and dicts with string keys (JSON objects). Positional or repeated keyword
/// arguments make the list not a call list.
struct ToolCallPythonParser {
    private let bytes: [UInt8]
    private var position = 0
    private var depth = 0

    private init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// The calls `bytes` hold, or `nil` unless they are exactly one non-empty call list.
    static func parseCallList(_ bytes: [UInt8]) -> [ExtractedToolCall]? {
        var parser = ToolCallPythonParser(bytes)
        parser.skipWhitespace()
        guard parser.consume("["), let calls = parser.parseSequence(closer: "]", parseElement: { $0.parseCall() })
        else { return nil }
        parser.skipWhitespace()
        return parser.position == bytes.count && !calls.isEmpty ? calls : nil
    }

    private var current: UInt8? {
        position < bytes.count ? bytes[position] : nil
    }

    private mutating func skipWhitespace() {
        while let byte = current, ToolCallBytes.isWhitespace(byte) { position += 1 }
    }

    private mutating func consume(_ character: Unicode.Scalar) -> Bool {
        guard current == UInt8(ascii: character) else { return false }
        position += 1
        return true
    }

    /// Elements separated by commas, an optional trailing comma, then `closer`.
    private mutating func parseSequence<Element>(
        closer: Unicode.Scalar,
        parseElement: (inout ToolCallPythonParser) -> Element?
    ) -> [Element]? {
        var elements: [Element] = []
        while true {
            skipWhitespace()
            if consume(closer) { return elements }
            guard let element = parseElement(&self) else { return nil }
            elements.append(element)
            skipWhitespace()
            if consume(closer) { return elements }
            guard consume(",") else { return nil }
        }
    }

    private mutating func parseName(allowingHyphen: Bool) -> String? {
        let start = position
        while let byte = current, ToolCallBytes.isNameByte(byte), allowingHyphen || byte != UInt8(ascii: "-") {
            position += 1
        }
        guard position > start else { return nil }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    private mutating func parseCall() -> ExtractedToolCall? {
        guard let name = parseName(allowingHyphen: true), ToolFunctionName.isValid(name) else { return nil }
        skipWhitespace()
        guard consume("("), let arguments = parseSequence(closer: ")", parseElement: { $0.parseKeywordArgument() })
        else {
            return nil
        }
        guard Set(arguments.map(\.key)).count == arguments.count else { return nil }
        return ExtractedToolCall(name: name, arguments: ToolCallJSONValue.object(arguments).serialized)
    }

    private mutating func parseKeywordArgument() -> ToolCallJSONValue.Member? {
        guard let key = parseName(allowingHyphen: false), !ToolCallBytes.isDigit(key.utf8.first ?? 0) else {
            return nil
        }
        skipWhitespace()
        guard consume("="), let value = parseValue() else { return nil }
        return .init(key: key, value: value)
    }

    private mutating func parseValue() -> ToolCallJSONValue? {
        skipWhitespace()
        guard let byte = current, depth < ToolCallJSONScanner.maximumDepth else { return nil }
        depth += 1
        defer { depth -= 1 }
        switch byte {
        case UInt8(ascii: "'"), UInt8(ascii: "\""):
            return parseString().map(ToolCallJSONValue.string)
        case UInt8(ascii: "["):
            position += 1
            return parseSequence(closer: "]") { $0.parseValue() }.map(ToolCallJSONValue.array)
        case UInt8(ascii: "("):
            return parseTupleOrParenthesised()
        case UInt8(ascii: "{"):
            position += 1
            let members = parseSequence(closer: "}") { $0.parseDictionaryEntry() }
            return members.map(ToolCallJSONValue.object)
        case UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."):
            return parseNumber()
        case _ where ToolCallBytes.isDigit(byte):
            return parseNumber()
        default:
            let words: [String: ToolCallJSONValue] = [
                "True": .bool(true), "False": .bool(false), "None": .null,
                "true": .bool(true), "false": .bool(false), "null": .null,
            ]
            guard let word = parseName(allowingHyphen: false) else { return nil }
            return words[word]
        }
    }

    private mutating func parseTupleOrParenthesised() -> ToolCallJSONValue? {
        position += 1
        skipWhitespace()
        if consume(")") { return .array([]) }
        guard let first = parseValue() else { return nil }
        skipWhitespace()
        if consume(")") { return first }
        guard consume(","), let rest = parseSequence(closer: ")", parseElement: { $0.parseValue() }) else { return nil }
        return .array([first] + rest)
    }

    private mutating func parseDictionaryEntry() -> ToolCallJSONValue.Member? {
        guard let current, current == UInt8(ascii: "'") || current == UInt8(ascii: "\""), let key = parseString() else {
            return nil
        }
        skipWhitespace()
        guard consume(":"), let value = parseValue() else { return nil }
        return .init(key: key, value: value)
    }

    /// A number as valid JSON text: `+` and `_` dropped, `.5` → `0.5`, `1.` → `1.0`, `007` → `7`.
    private mutating func parseNumber() -> ToolCallJSONValue? {
        let isNegative = consume("-")
        if !isNegative { _ = consume("+") }
        var integer = digits()
        var fraction: [UInt8] = []
        let hasDot = consume(".")
        if hasDot { fraction = digits() }
        guard !integer.isEmpty || !fraction.isEmpty else { return nil }
        var exponent: [UInt8] = []
        if consume("e") || consume("E") {
            exponent = Array("e".utf8)
            if consume("-") { exponent.append(UInt8(ascii: "-")) } else { _ = consume("+") }
            let exponentDigits = digits()
            guard !exponentDigits.isEmpty else { return nil }
            exponent += exponentDigits
        }
        if let byte = current, ToolCallBytes.isNameByte(byte) || byte == UInt8(ascii: ".") { return nil }
        while integer.count > 1, integer.first == UInt8(ascii: "0") { integer.removeFirst() }
        var text: [UInt8] = isNegative ? [UInt8(ascii: "-")] : []
        text += integer.isEmpty ? Array("0".utf8) : integer
        if hasDot { text += [UInt8(ascii: ".")] + (fraction.isEmpty ? Array("0".utf8) : fraction) }
        return .number(String(decoding: text + exponent, as: UTF8.self))
    }

    /// Digits with single underscores between them removed.
    private mutating func digits() -> [UInt8] {
        var result: [UInt8] = []
        while let byte = current {
            if ToolCallBytes.isDigit(byte) {
                result.append(byte)
            } else if byte == UInt8(ascii: "_"), !result.isEmpty, position + 1 < bytes.count,
                ToolCallBytes.isDigit(bytes[position + 1])
            {
                // Separator between digits.
            } else {
                break
            }
            position += 1
        }
        return result
    }

    /// A single-line string starting at its opening quote, with Python's escapes.
    private mutating func parseString() -> String? {
        guard let quote = current else { return nil }
        position += 1
        var output: [UInt8] = []
        while let byte = current {
            position += 1
            if byte == quote { return String(decoding: output, as: UTF8.self) }
            if byte == 0x0A || byte == 0x0D { return nil }
            guard byte == UInt8(ascii: "\\") else {
                output.append(byte)
                continue
            }
            guard let escaped = current else { return nil }
            position += 1
            let simple: [UInt8: UInt8] = [
                UInt8(ascii: "\\"): 0x5C, UInt8(ascii: "'"): 0x27, UInt8(ascii: "\""): 0x22, UInt8(ascii: "n"): 0x0A,
                UInt8(ascii: "t"): 0x09, UInt8(ascii: "r"): 0x0D, UInt8(ascii: "0"): 0x00, UInt8(ascii: "a"): 0x07,
                UInt8(ascii: "b"): 0x08, UInt8(ascii: "f"): 0x0C, UInt8(ascii: "v"): 0x0B,
            ]
            if let replacement = simple[escaped] {
                output.append(replacement)
            } else if let width = [UInt8(ascii: "x"): 2, UInt8(ascii: "u"): 4, UInt8(ascii: "U"): 8][escaped] {
                guard let scalar = hexScalar(width: width) else { return nil }
                output += Array(String(Character(scalar)).utf8)
            } else if escaped == 0x0A {
                // A backslash before a line break continues the line.
            } else {
                output += [UInt8(ascii: "\\"), escaped]
            }
        }
        return nil
    }

    private mutating func hexScalar(width: Int) -> Unicode.Scalar? {
        guard position + width <= bytes.count, bytes[position..<position + width].allSatisfy(ToolCallBytes.isHexDigit)
        else {
            return nil
        }
        let text = String(decoding: bytes[position..<position + width], as: UTF8.self)
        position += width
        return UInt32(text, radix: 16).flatMap(Unicode.Scalar.init)
    }
}
