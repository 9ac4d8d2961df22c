import Testing

@testable import Shared

@Suite("Pythonic tool-call parser")
struct PythonicToolCallParserTests {
    private let parser = PythonicToolCallParser(idGenerator: ToolCallIDGenerator { "call_\($0)" })

    @Test("a list is released at the first byte that rules calls out")
    func listReleased() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("[1") == [])
        #expect(stream.feed(", 2]") == [.content("[1, 2]")])
        #expect(stream.finish() == [])
    }

    @Test("a call list is held until its bracket closes")
    func callListHeld() {
        var stream = parser.makeStreamingParser()
        #expect(stream.feed("[get_weather(city='Par") == [])
        #expect(stream.feed("is)]") == [])
        #expect(stream.feed("]") == [])
        #expect(stream.finish() == [.content("[get_weather(city='Paris)]]")])
    }

    @Test("brackets inside strings do not end the list")
    func bracketsInStrings() {
        let parsed = parser.parse("[f(a=']', b=\"(\", c={'x': [1]})]")
        #expect(parsed.toolCalls.map(\.function.arguments) == [#"{"a":"]","b":"(","c":{"x":[1]}}"#])
    }

    @Test("a second list right after the first is parsed too")
    func consecutiveLists() {
        let parsed = parser.parse("[f()]\n[g(x=-2e-3)]")
        #expect(parsed.toolCalls.map(\.function.name) == ["f", "g"])
        #expect(parsed.toolCalls.last?.function.arguments == #"{"x":-2e-3}"#)
        #expect(parsed.content == nil)
    }

    @Test(
        "Python literals that JSON cannot express are not calls",
        arguments: [
            "[f(a=0x10)]", "[f(a=b'x')]", "[f(a={1: 2})]", "[f(a='''x''')]", "[f(a=1j)]", "[f(a=x)]", "[f(*a)]",
            "[f(a='x' 'y')]", "[f(a=1)(b=2)]", "[f(a=1)) ]", "[]", "[f(a=1) # c\n]",
        ])
    func unsupportedLiterals(_ input: String) {
        let parsed = parser.parse(input)
        #expect(parsed.toolCalls.isEmpty)
        #expect(parsed.content == input)
    }
}
