/// ASCII byte classes shared by the tool-call syntaxes (a namespace, so nothing here extends
/// standard types).
enum ToolCallBytes {
    /// JSON whitespace: space, tab, line feed, carriage return.
    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }

    /// `0`–`9`.
    static func isDigit(_ byte: UInt8) -> Bool {
        byte >= 0x30 && byte <= 0x39
    }

    /// `0`–`9`, `a`–`f`, `A`–`F`.
    static func isHexDigit(_ byte: UInt8) -> Bool {
        isDigit(byte) || (byte >= 0x61 && byte <= 0x66) || (byte >= 0x41 && byte <= 0x46)
    }

    /// A byte allowed in a function name: `[a-zA-Z0-9_-]`.
    static func isNameByte(_ byte: UInt8) -> Bool {
        isDigit(byte) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A)
            || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }

    /// The index of the first non-whitespace byte, if any.
    static func firstNonWhitespace(in bytes: ArraySlice<UInt8>) -> Int? {
        bytes.firstIndex { !isWhitespace($0) }
    }
}
