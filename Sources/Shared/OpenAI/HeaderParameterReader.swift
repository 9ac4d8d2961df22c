/// Reads `;`-separated `key=value` parameters after a header value's first word (`content-type`,
/// a part's `content-disposition`): values are tokens or quoted strings without backslashes (a
/// backslash is refused: parsers disagree on it, and the names the gateway reads never need one).
struct HeaderParameterReader {
    struct Parameter {
        var key: [UInt8]
        var value: [UInt8]
    }

    struct Failure: Error {
        let reason: String
    }

    private let text: [UInt8]
    private var index = 0

    init(_ text: [UInt8]) {
        self.text = text
    }

    /// A token after optional white space; nil when there is none.
    mutating func token() -> [UInt8]? {
        skipWhitespace()
        let start = index
        while index < text.count, Self.isTokenByte(text[index]) { index += 1 }
        return index > start ? Array(text[start..<index]) : nil
    }

    /// Skips `byte` (after optional white space) when it is next.
    mutating func skip(_ byte: UInt8) -> Bool {
        skipWhitespace()
        guard index < text.count, text[index] == byte else { return false }
        index += 1
        return true
    }

    /// The next `; key=value`, or nil at the end (a trailing `;` is allowed).
    /// `lenientValues`: an unquoted value may hold any byte but white space, `;` and quotes
    /// (a `content-type`'s boundary may hold `=`, `/`...), not only token bytes.
    mutating func nextParameter(lenientValues: Bool = false) throws(Failure) -> Parameter? {
        skipWhitespace()
        if index == text.count { return nil }
        guard text[index] == UInt8(ascii: ";") else { throw Failure(reason: "expected ';' between parameters") }
        index += 1
        skipWhitespace()
        if index == text.count { return nil }
        guard let key = token() else { throw Failure(reason: "a parameter has no name") }
        guard skip(UInt8(ascii: "=")) else { throw Failure(reason: "a parameter has no value") }
        skipWhitespace()
        guard index < text.count else { throw Failure(reason: "a parameter has no value") }
        if text[index] == UInt8(ascii: "\"") {
            index += 1
            let start = index
            while index < text.count, text[index] != UInt8(ascii: "\"") {
                guard text[index] != UInt8(ascii: "\\") else { throw Failure(reason: "a backslash in a quoted parameter") }
                index += 1
            }
            guard index < text.count else { throw Failure(reason: "an unterminated quoted parameter") }
            defer { index += 1 }
            return Parameter(key: key, value: Array(text[start..<index]))
        }
        let start = index
        while index < text.count, lenientValues ? Self.isLenientValueByte(text[index]) : Self.isTokenByte(text[index]) { index += 1 }
        guard index > start else { throw Failure(reason: "a parameter has no value") }
        return Parameter(key: key, value: Array(text[start..<index]))
    }

    private mutating func skipWhitespace() {
        while index < text.count, text[index] == UInt8(ascii: " ") || text[index] == UInt8(ascii: "\t") { index += 1 }
    }

    /// `bytes` with ASCII letters in lower case.
    static func lowercased(_ bytes: some Collection<UInt8>) -> [UInt8] {
        bytes.map { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) ? $0 | 0x20 : $0 }
    }

    /// RFC 9110's `tchar`.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"): true
        default: tokenPunctuation.contains(byte)
        }
    }

    private static func isLenientValueByte(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte < 0x7F && byte != UInt8(ascii: ";") && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\")
    }

    private static let tokenPunctuation = Set("!#$%&'*+-.^_`|~".utf8)
}
