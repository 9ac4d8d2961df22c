import Testing

@testable import Shared

@Suite("Mistral tool-call parser")
struct MistralToolCallParserTests {
    private let parser = MistralToolCallParser(idGenerator: ToolCallIDGenerator { "call_\($0)" })

    @Test("[TOOL_CALLS] split across chunks")
    func markerAcrossChunks() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("Sure [TOOL_") == [.content("Sure")])
        #expect(stream.feed("CALLS][{\"name\": \"f\", \"arguments\": {\"x\": \"]\"}}") == [])
        #expect(
            stream.feed("]") == [
                .toolCallStart(index: 0, id: "call_0", name: "f"),
                .toolCallArguments(index: 0, fragment: #"{"x":"]"}"#),
            ])
        #expect(stream.finish() == [])
    }

    @Test("brackets in prose are released at the first byte that rules out a marker")
    func bracketsInProse() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("see [") == [.content("see")])
        #expect(stream.feed("1]") == [.content(" [1]")])
        #expect(stream.finish() == [])
    }

    @Test("the [ARGS] form gives one call per marker")
    func argumentsForm() {
        let parsed = parser.parse("[TOOL_CALLS]a[ARGS]{\"k\": 1}[TOOL_CALLS]b[ARGS]{}")
        #expect(parsed.toolCalls.map(\.function.name) == ["a", "b"])
        #expect(parsed.toolCalls.map(\.function.arguments) == [#"{"k":1}"#, "{}"])
        #expect(parsed.content == nil)
    }
}
