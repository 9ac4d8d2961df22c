/// Matches a fixed ASCII marker such as `<tool_call>` one byte at a time.
struct ToolCallLiteralMatcher: Sendable, Hashable {
    /// How far a match has got.
    enum Progress: Sendable, Hashable {
        /// The bytes so far are a proper prefix of the literal.
        case partial
        /// The whole literal has been read.
        case complete
        /// The last byte does not continue the literal.
        case mismatch
    }

    private let literal: [UInt8]
    private var matched = 0

    /// Creates a matcher for `literal`, which must not be empty.
    init(_ literal: String) {
        self.literal = Array(literal.utf8)
    }

    /// Reads the next byte.
    mutating func consume(_ byte: UInt8) -> Progress {
        guard matched < literal.count, literal[matched] == byte else { return .mismatch }
        matched += 1
        return matched == literal.count ? .complete : .partial
    }
}
