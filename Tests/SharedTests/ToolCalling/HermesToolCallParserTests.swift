import Testing

@testable import Shared

@Suite("Hermes tool-call parser")
struct HermesToolCallParserTests {
    private let parser = HermesToolCallParser(idGenerator: ToolCallIDGenerator { "call_\($0)" })

    @Test("plain text is forwarded at once; only a possible marker is held back")
    func holdsBackOnlyMarkerPrefixes() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("Hello wor") == [.content("Hello wor")])
        #expect(stream.feed("ld <tool") == [.content("ld")])
        #expect(stream.feed("x> and more") == [.content(" <toolx> and more")])
        #expect(stream.finish() == [])
    }

    @Test("a call is emitted once its closing tag arrives")
    func emitsCallOnClosingTag() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("Checking.\n<tool_call>\n{\"name\": \"get_weather\", ") == [.content("Checking.")])
        #expect(stream.feed("\"arguments\": {\"city\": \"Paris\"}}\n</tool") == [])
        #expect(
            stream.feed("_call>\n") == [
                .toolCallStart(index: 0, id: "call_0", name: "get_weather"),
                .toolCallArguments(index: 0, fragment: #"{"city":"Paris"}"#),
            ])
        #expect(
            stream.feed("<tool_call>{\"name\": \"b\"}</tool_call>") == [
                .toolCallStart(index: 1, id: "call_1", name: "b"),
                .toolCallArguments(index: 1, fragment: "{}"),
            ])
        #expect(stream.finish() == [])
    }

    @Test("malformed JSON inside the tags is released as soon as it is malformed")
    func releasesMalformedEarly() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("<tool_call>{\"name\" x") == [.content("<tool_call>{\"name\" x")])
        #expect(stream.finish() == [])
    }

    @Test("an unterminated call at the end is released as text")
    func releasesUnterminatedAtEnd() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("<tool_call>{\"name\": \"f\", \"arguments\": {") == [])
        #expect(stream.finish() == [.content("<tool_call>{\"name\": \"f\", \"arguments\": {")])
    }

    @Test("feeding after finish passes text through")
    func feedAfterFinish() {
        var stream = parser.makeStreamingParser()
        #expect(stream.finish() == [])
        #expect(stream.feed("<tool_call>") == [.content("<tool_call>")])
        #expect(stream.finish() == [])
    }

    @Test("production ids are call_ and 24 alphanumerics")
    func productionIDs() throws {
        let parsed = HermesToolCallParser().parse("<tool_call>{\"name\": \"f\"}</tool_call>")
        let id = try #require(parsed.toolCalls.first?.id)
        #expect(id.hasPrefix("call_"))
        #expect(id.utf8.count == 29)
        #expect(
            id.utf8.dropFirst(5).allSatisfy {
                ToolCallBytes.isDigit($0)
                    || ToolCallBytes.isNameByte($0) && $0 != UInt8(ascii: "_") && $0 != UInt8(ascii: "-")
            })
    }

    @Test("segments keep the markup and the absorbed whitespace")
    func segments() {
        let parsed = parser.parse("A \n<tool_call>{\"name\": \"f\"}</tool_call>\n B")
        #expect(
            parsed.segments == [
                .content("A"),
                .toolCalls(source: " \n<tool_call>{\"name\": \"f\"}</tool_call>", indices: 0..<1),
                .content("\n B"),
            ])
        #expect(parsed.content == "A\n B")
    }
}
