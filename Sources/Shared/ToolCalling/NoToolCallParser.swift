/// The `none` family: the model has no tool-call syntax the gateway knows. Text passes
/// through untouched and requests with `tools` are refused (see ``ToolRequestValidator``).
public struct NoToolCallParser: ToolCallParser {
    /// `"none"`.
    public static let name = "none"
    /// Requests with tools are refused for these models.
    public static let supportsToolCalls = false

    /// Creates the parser; the generator is never used.
    public init(idGenerator: ToolCallIDGenerator = .random) {}

    /// Returns the text as content.
    public func parse(_ text: String) -> ParsedToolCalls {
        ParsedToolCalls(
            content: text.isEmpty ? nil : text, toolCalls: [], segments: text.isEmpty ? [] : [.content(text)])
    }

    /// Makes a parser that forwards every chunk as content at once.
    public func makeStreamingParser() -> any StreamingToolCallParser {
        Passthrough()
    }

    private struct Passthrough: StreamingToolCallParser {
        mutating func feed(_ chunk: String) -> [ToolCallStreamEvent] {
            chunk.isEmpty ? [] : [.content(chunk)]
        }

        mutating func finish() -> [ToolCallStreamEvent] {
            []
        }
    }
}
