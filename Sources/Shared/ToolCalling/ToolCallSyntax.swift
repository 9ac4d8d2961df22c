/// What a ``ToolCallSyntax`` may know about the text before a candidate: some families only
/// open calls at the very start of the output or directly after another call.
struct ToolCallScanContext: Sendable, Hashable {
    /// Nothing but whitespace has been read so far.
    var isAtStartOfOutput = true
    /// The last thing recognised was a call, followed by nothing but whitespace.
    var followsToolCall = false
}

/// A call recognised in the text, before the scanner gives it an id.
struct ExtractedToolCall: Sendable, Hashable {
    /// The function name; always matches ``ToolFunctionName/isValid(_:)``.
    var name: String
    /// Compact JSON object text.
    var arguments: String
}

/// A matcher's verdict after each byte.
enum ToolCallMatchStep: Sendable, Hashable {
    /// More bytes are needed.
    case undecided
    /// The candidate's first byte is plain text.
    case rejected
    /// The bytes consumed so far, this one included, are the markup of these calls.
    case accepted([ExtractedToolCall])
}

/// Decides, byte by byte, whether a candidate is a tool call.
///
/// The verdict for a prefix must not depend on what follows it: a matcher answers
/// ``ToolCallMatchStep/rejected`` or ``ToolCallMatchStep/accepted(_:)`` only when every
/// continuation would give the same answer. That is what makes streaming chunk-independent.
protocol ToolCallMatcher: Sendable {
    /// Reads the next byte; the first call passes the candidate's first byte.
    mutating func consume(_ byte: UInt8) -> ToolCallMatchStep

    /// The text ended while undecided: returns ``ToolCallMatchStep/rejected``, or
    /// ``ToolCallMatchStep/accepted(_:)`` to claim every byte consumed as call markup.
    mutating func finish() -> ToolCallMatchStep
}

/// One model family's tool-call syntax, driven by ``ToolCallStreamScanner``.
protocol ToolCallSyntax: Sendable {
    /// The matcher for one candidate.
    associatedtype Matcher: ToolCallMatcher

    /// The index (in the slice's own indices) of the first byte of `bytes` where a call may
    /// begin, or `nil` when no call can begin in `bytes`. Candidates are never whitespace, and
    /// the answer for a prefix must stay the answer once more bytes are appended (or be `nil`,
    /// with later candidates lying past the prefix).
    func candidateStart(in bytes: ArraySlice<UInt8>, context: ToolCallScanContext) -> Int?

    /// Makes a matcher for a candidate found in `context`.
    func makeMatcher(context: ToolCallScanContext) -> Matcher
}
