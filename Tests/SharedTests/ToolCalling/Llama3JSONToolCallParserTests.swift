import Testing

@testable import Shared

@Suite("Llama 3 JSON tool-call parser")
struct Llama3JSONToolCallParserTests {
    private let parser = Llama3JSONToolCallParser(idGenerator: ToolCallIDGenerator { "call_\($0)" })

    @Test("a JSON object at the start is held until it closes, then released if it is no call")
    func jsonAnswerReleasedWhenClosed() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("  {\"answer\": ") == [])
        #expect(stream.feed("42} ok") == [.content("  {\"answer\": 42} ok")])
        #expect(stream.finish() == [])
    }

    @Test("prose with braces is forwarded at once")
    func proseForwarded() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("I think {x") == [.content("I think {x")])
        #expect(stream.feed("} <|python") == [.content("}")])
        #expect(
            stream.feed("_tag|>{\"name\": \"f\", \"parameters\": {\"a\": 1}}") == [
                .toolCallStart(index: 0, id: "call_0", name: "f"),
                .toolCallArguments(index: 0, fragment: #"{"a":1}"#),
            ])
        #expect(stream.finish() == [])
    }

    @Test("JSON that goes wrong is released at the first bad byte")
    func earlyRelease() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("{ oops") == [.content("{ oops")])
        #expect(stream.finish() == [])
    }

    @Test("calls separated by semicolons stream one by one")
    func semicolonSeparated() {
        var stream = parser.makeStreamingParser()
        #expect(
            stream.feed("{\"name\": \"a\", \"parameters\": {}}") == [
                .toolCallStart(index: 0, id: "call_0", name: "a"), .toolCallArguments(index: 0, fragment: "{}"),
            ])
        #expect(stream.feed(" ; ") == [])
        #expect(
            stream.feed("{\"name\": \"b\", \"parameters\": {}}") == [
                .toolCallStart(index: 1, id: "call_1", name: "b"), .toolCallArguments(index: 1, fragment: "{}"),
            ])
        #expect(stream.finish() == [])
    }
}
