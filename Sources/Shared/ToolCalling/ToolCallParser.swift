/// Recognises one model family's tool-call syntax in assistant text and turns it into
/// OpenAI `tool_calls`.
///
/// Conforming types are small values registered by ``name`` in a ``ToolCallParserRegistry``.
/// For every input and every way of splitting it into chunks, feeding the chunks to
/// ``makeStreamingParser()`` and rebuilding the message from the events (see
/// ``ToolCallStreamAccumulator``) gives the same content and calls as ``parse(_:)``.
public protocol ToolCallParser: Sendable {
    /// The configuration name (`tool_parser`) of this family, e.g. `"hermes"`.
    static var name: String { get }
    /// Whether requests with `tools` may be sent to models using this parser.
    static var supportsToolCalls: Bool { get }

    /// Creates a parser whose calls get ids from `idGenerator`. Each ``parse(_:)`` and each
    /// streaming parser starts from a copy of the generator as given here.
    init(idGenerator: ToolCallIDGenerator)

    /// Parses a complete assistant message.
    func parse(_ text: String) -> ParsedToolCalls

    /// Makes a fresh incremental parser for one choice of one streamed response.
    func makeStreamingParser() -> any StreamingToolCallParser
}

extension ToolCallParser {
    /// Families that parse calls support tools.
    public static var supportsToolCalls: Bool { true }

    /// The configuration name of this parser's family.
    public var name: String { Self.name }
}

/// An incremental tool-call parser for one choice of a streamed response.
///
/// It forwards plain text at once, holding back only bytes that may begin a tool call
/// (plus any whitespace directly before them), and emits each call once its syntax is
/// complete and valid; text that turns out not to be a call is released unchanged.
public protocol StreamingToolCallParser: Sendable {
    /// Reads the next piece of `delta.content` and returns the events it makes decidable.
    mutating func feed(_ chunk: String) -> [ToolCallStreamEvent]

    /// Ends the message (the upstream sent its `finish_reason`) and returns the events for
    /// everything still held back. Further calls to ``feed(_:)`` return their text as content.
    mutating func finish() -> [ToolCallStreamEvent]
}
