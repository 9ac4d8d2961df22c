/// A JSON value that keeps object members in their written order and numbers as written,
/// so re-serialising a model's arguments changes only insignificant whitespace.
enum ToolCallJSONValue: Sendable, Hashable {
    /// One object member.
    struct Member: Sendable, Hashable {
        /// The member's key.
        var key: String
        /// The member's value.
        var value: ToolCallJSONValue
    }

    /// `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// A number, as its valid JSON text.
    case number(String)
    /// A string.
    case string(String)
    /// An array.
    case array([ToolCallJSONValue])
    /// An object, members in order (duplicate keys kept).
    case object([Member])

    /// The value of the first member named `key`, when this is an object.
    subscript(key: String) -> ToolCallJSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// How many members named `key` this object has.
    func count(of key: String) -> Int {
        guard case .object(let members) = self else { return 0 }
        return members.reduce(0) { $0 + ($1.key == key ? 1 : 0) }
    }

    /// Compact JSON text: no insignificant whitespace, `"`, `\` and control characters escaped.
    var serialized: String {
        var output: [UInt8] = []
        write(to: &output)
        return String(decoding: output, as: UTF8.self)
    }

    private func write(to output: inout [UInt8]) {
        switch self {
        case .null:
            output.append(contentsOf: "null".utf8)
        case .bool(let value):
            output.append(contentsOf: (value ? "true" : "false").utf8)
        case .number(let text):
            output.append(contentsOf: text.utf8)
        case .string(let text):
            Self.writeString(text, to: &output)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (offset, element) in elements.enumerated() {
                if offset > 0 { output.append(UInt8(ascii: ",")) }
                element.write(to: &output)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let members):
            output.append(UInt8(ascii: "{"))
            for (offset, member) in members.enumerated() {
                if offset > 0 { output.append(UInt8(ascii: ",")) }
                Self.writeString(member.key, to: &output)
                output.append(UInt8(ascii: ":"))
                member.value.write(to: &output)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    private static func writeString(_ text: String, to output: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        output.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): output.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): output.append(contentsOf: #"\\"#.utf8)
            case 0x0A: output.append(contentsOf: #"\n"#.utf8)
            case 0x0D: output.append(contentsOf: #"\r"#.utf8)
            case 0x09: output.append(contentsOf: #"\t"#.utf8)
            case 0x08: output.append(contentsOf: #"\b"#.utf8)
            case 0x0C: output.append(contentsOf: #"\f"#.utf8)
            case 0x00..<0x20: output.append(contentsOf: #"\u00"#.utf8 + [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]])
            default: output.append(byte)
            }
        }
        output.append(UInt8(ascii: "\""))
    }
}
