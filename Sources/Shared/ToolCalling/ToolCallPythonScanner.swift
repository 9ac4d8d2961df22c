/// Finds the end of a pythonic call list incrementally: it tracks brackets and quoted
/// strings, starting just inside `[name(`, and completes when that `[` is closed.
///
/// It only finds the boundary; ``ToolCallPythonParser`` checks the grammar afterwards.
/// Mismatched brackets, a line break inside a string, a comment, or nesting deeper than
/// ``ToolCallJSONScanner/maximumDepth`` make it invalid at once.
struct ToolCallPythonScanner: Sendable, Hashable {
    /// The scan's state after a byte.
    typealias Progress = ToolCallJSONScanner.Progress

    private var closers: [UInt8] = [UInt8(ascii: "]"), UInt8(ascii: ")")]
    private var quote: UInt8?
    private var isEscaped = false
    private var isFinished = false

    /// Reads the next byte.
    mutating func consume(_ byte: UInt8) -> Progress {
        guard !isFinished else { return .invalid }
        if let quote {
            if isEscaped {
                isEscaped = false
            } else if byte == UInt8(ascii: "\\") {
                isEscaped = true
            } else if byte == quote {
                self.quote = nil
            } else if byte == 0x0A || byte == 0x0D {
                return fail()
            }
            return .incomplete
        }
        switch byte {
        case UInt8(ascii: "'"), UInt8(ascii: "\""):
            quote = byte
        case UInt8(ascii: "("), UInt8(ascii: "["), UInt8(ascii: "{"):
            guard closers.count < ToolCallJSONScanner.maximumDepth else { return fail() }
            closers.append(byte == UInt8(ascii: "(") ? UInt8(ascii: ")") : byte + 2)
        case UInt8(ascii: ")"), UInt8(ascii: "]"), UInt8(ascii: "}"):
            guard closers.last == byte else { return fail() }
            closers.removeLast()
            if closers.isEmpty {
                isFinished = true
                return .complete
            }
        case UInt8(ascii: "#"):
            return fail()
        default:
            break
        }
        return .incomplete
    }

    private mutating func fail() -> Progress {
        isFinished = true
        return .invalid
    }
}
