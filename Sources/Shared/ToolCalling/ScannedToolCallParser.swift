/// A ``ToolCallParser`` defined entirely by its ``ToolCallSyntax``: ``parse(_:)`` and
/// ``makeStreamingParser()`` both run a ``ToolCallStreamScanner`` over that syntax, which
/// is what makes a whole message and any chunking of it give the same result.
///
/// A family conforms by naming itself, keeping the generator it was created with and
/// implementing ``ToolCallSyntax``; the two entry points come from the extension below.
protocol ScannedToolCallParser: ToolCallParser, ToolCallSyntax {
    /// Where call ids come from; each parse and each streaming parser starts from a copy.
    var idGenerator: ToolCallIDGenerator { get }
}

extension ScannedToolCallParser {
    /// Parses a complete assistant message with the machine that streams it.
    func parse(_ text: String) -> ParsedToolCalls {
        ToolCallStreamScanner.parse(text, syntax: self, idGenerator: idGenerator)
    }

    /// Makes an incremental parser for one streamed choice.
    func makeStreamingParser() -> any StreamingToolCallParser {
        ToolCallStreamScanner(syntax: self, idGenerator: idGenerator)
    }
}
