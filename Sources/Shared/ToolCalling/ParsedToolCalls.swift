/// The result of running a ``ToolCallParser`` over a complete assistant message.
///
/// Every input byte is accounted for: joining the ``segments`` in order reproduces the input
/// exactly. Plain text segments make up ``content``; tool-call segments hold the raw markup
/// (markers, JSON, separators and the whitespace the parser absorbed around the calls).
public struct ParsedToolCalls: Sendable, Hashable {
    /// One run of the input, either plain text or the source of recognised calls.
    public enum Segment: Sendable, Hashable {
        /// Text passed through as message content.
        case content(String)
        /// Raw markup that produced the calls at `indices` in ``ParsedToolCalls/toolCalls``.
        case toolCalls(source: String, indices: Range<Int>)
    }

    /// The plain text left once the calls are removed; `nil` when there is none.
    public var content: String?
    /// The recognised calls, in the order they appear in the text.
    public var toolCalls: [ToolCall]
    /// The input split into content and call markup, in input order.
    public var segments: [Segment]

    /// Creates a parse result.
    public init(content: String?, toolCalls: [ToolCall], segments: [Segment]) {
        self.content = content
        self.toolCalls = toolCalls
        self.segments = segments
    }

    /// The `finish_reason` to report: `"tool_calls"` when calls were recognised, otherwise
    /// the upstream's own reason, unchanged.
    public func finishReason(replacing upstream: String?) -> String? {
        toolCalls.isEmpty ? upstream : "tool_calls"
    }
}
