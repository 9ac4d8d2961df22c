import Foundation

/// Decodes a JSON value that ``JSONScanner`` already validated into Swift's own values —
/// `[String: Any]`, `[Any]`, `String`, `Int` or `Double`, `Bool`, and `NSNull` for `null` —
/// in one pass, with no Foundation objects to bridge.
///
/// The tool pre-flight reads a request's `tools` this way: `JSONSerialization` and the
/// bridging of its `NSDictionary`s to Swift dictionaries cost 670 ms of a worker's event loop
/// for 770 KB of tool schemas; this costs a few milliseconds. Only for validated input: it
/// trusts the grammar and checks nothing (an unvalidated range may decode to garbage, never
/// read out of bounds).
public struct JSONNativeDecoder {
    private let bytes: UnsafeRawBufferPointer
    private var index: Int
    private let end: Int
    private let containerDepth: Int

    /// The value at `range` of `bytes`, which ``JSONScanner`` validated (as part of a
    /// document); nil for an empty range.
    ///
    /// - Parameter containerDepth: objects and arrays nested deeper than this (the value
    ///   itself is depth 0) are skipped, not built: they decode as an empty `[String: Any]`
    ///   or `[Any]`, which says what they are and costs nothing. Scalars decode at any depth.
    public static func decode(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, containerDepth: Int = .max) -> Any? {
        guard !range.isEmpty, range.upperBound <= bytes.count else { return nil }
        var decoder = JSONNativeDecoder(bytes: bytes, index: range.lowerBound, end: range.upperBound, containerDepth: containerDepth)
        return decoder.value(depth: 0)
    }

    /// Steps over the object or array at the cursor (strings inside it are skipped whole).
    private mutating func skipContainer() {
        var depth = 0
        while index < end {
            switch bytes[index] {
            case UInt8(ascii: "\""):
                index += 1
                while index < end, bytes[index] != UInt8(ascii: "\"") { index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1 }
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 {
                    index += 1
                    return
                }
            default:
                break
            }
            index += 1
        }
    }

    private func peek() -> UInt8 { index < end ? bytes[index] : 0 }

    private mutating func skipWhitespace() {
        while index < end, bytes[index] == 0x20 || bytes[index] == 0x09 || bytes[index] == 0x0A || bytes[index] == 0x0D { index += 1 }
    }

    private mutating func value(depth: Int) -> Any {
        skipWhitespace()
        // The scanner allows 64 levels; this bound only keeps garbage from recursing deeper.
        guard depth <= JSONScanner.maxDepth + 1 else { return NSNull() }
        switch peek() {
        case UInt8(ascii: "{") where depth > containerDepth:
            skipContainer()
            return [String: Any]()
        case UInt8(ascii: "[") where depth > containerDepth:
            skipContainer()
            return [Any]()
        case UInt8(ascii: "{"):
            index += 1
            var object: [String: Any] = [:]
            skipWhitespace()
            if peek() == UInt8(ascii: "}") {
                index += 1
                return object
            }
            while index < end {
                skipWhitespace()
                let key = string()
                skipWhitespace()
                index += 1  // ':'
                object[key] = value(depth: depth + 1)
                skipWhitespace()
                let separator = peek()
                index += 1
                if separator != UInt8(ascii: ",") { break }
            }
            return object
        case UInt8(ascii: "["):
            index += 1
            var array: [Any] = []
            skipWhitespace()
            if peek() == UInt8(ascii: "]") {
                index += 1
                return array
            }
            while index < end {
                array.append(value(depth: depth + 1))
                skipWhitespace()
                let separator = peek()
                index += 1
                if separator != UInt8(ascii: ",") { break }
            }
            return array
        case UInt8(ascii: "\""):
            return string()
        case UInt8(ascii: "t"):
            index += 4
            return true
        case UInt8(ascii: "f"):
            index += 5
            return false
        case UInt8(ascii: "n"):
            index += 4
            return NSNull()
        default:
            let start = index
            while index < end, Self.isNumberByte(bytes[index]) { index += 1 }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if index == start { index += 1 }  // not a number: step over it
            if let integer = Int(text) { return integer }
            return Double(text) ?? 0
        }
    }

    /// The string literal at the cursor, decoded.
    private mutating func string() -> String {
        let start = index
        index += 1
        while index < end, bytes[index] != UInt8(ascii: "\"") { index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1 }
        index = min(index + 1, end)
        return JSONScanner.string(bytes, start..<index) ?? ""
    }

    private static func isNumberByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"):
            true
        default:
            false
        }
    }
}
