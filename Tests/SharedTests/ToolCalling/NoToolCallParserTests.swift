import Testing

@testable import Shared

@Suite("none tool-call parser")
struct NoToolCallParserTests {
    @Test("text passes through untouched, markers included")
    func passthrough() {
        let parser = NoToolCallParser()
        let text = "<tool_call>{\"name\": \"f\"}</tool_call>"
        #expect(parser.parse(text) == ParsedToolCalls(content: text, toolCalls: [], segments: [.content(text)]))
        #expect(parser.parse("") == ParsedToolCalls(content: nil, toolCalls: [], segments: []))
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("<tool_") == [.content("<tool_")])
        #expect(stream.feed("") == [])
        #expect(stream.finish() == [])
    }

    @Test("tools are refused")
    func refusesTools() {
        #expect(NoToolCallParser.supportsToolCalls == false)
        #expect(HermesToolCallParser.supportsToolCalls)
    }
}
