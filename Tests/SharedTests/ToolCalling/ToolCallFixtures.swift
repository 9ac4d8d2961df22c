import Testing

/// One input for one family with its expected non-streaming parse (ids aside).
struct ToolCallFixture: Sendable, CustomTestStringConvertible {
    var family: String
    var name: String
    var input: String
    var content: String?
    /// `(name, arguments)` of each expected call.
    var calls: [ExpectedCall]

    struct ExpectedCall: Sendable, Hashable {
        var name: String
        var arguments: String
    }

    init(_ family: String, _ name: String, _ input: String, content: String?, calls: [(String, String)] = []) {
        self.family = family
        self.name = name
        self.input = input
        self.content = content
        self.calls = calls.map { ExpectedCall(name: $0.0, arguments: $0.1) }
    }

    /// Fixtures whose whole input is plain text.
    static func text(_ family: String, _ name: String, _ input: String) -> ToolCallFixture {
        ToolCallFixture(family, name, input, content: input)
    }

    var testDescription: String { "\(family): \(name)" }
}

/// The per-family fixtures, as Swift literals so no resources need declaring.
enum ToolCallFixtures {
    static let hermes: [ToolCallFixture] = [
        .text("hermes", "plain text", "Hello, world! 2 < 3 and 5 > 4."),
        ToolCallFixture(
            "hermes", "one call",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>",
            content: nil, calls: [("get_weather", #"{"city":"Paris","unit":"celsius"}"#)]),
        ToolCallFixture(
            "hermes", "parallel calls",
            "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>\n",
            content: nil, calls: [("a", #"{"x":1}"#), ("b", "{}")]),
        ToolCallFixture(
            "hermes", "text before and after",
            "Let me check.\n<tool_call>{\"name\": \"lookup\", \"arguments\": {\"q\": \"swift\"}}</tool_call>\nDone.",
            content: "Let me check.\nDone.", calls: [("lookup", #"{"q":"swift"}"#)]),
        .text("hermes", "malformed JSON", "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}</tool_call> tail"),
        .text("hermes", "not JSON", "<tool_call>call f please</tool_call>"),
        .text("hermes", "look-alike markers", "a <toolx> b <tool_cal> c <tool_call"),
        .text("hermes", "invalid name", "<tool_call>{\"name\": \"get weather\", \"arguments\": {}}</tool_call>"),
        .text("hermes", "arguments not an object", "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>"),
        .text("hermes", "missing name", "<tool_call>{\"arguments\": {}}</tool_call>"),
        .text("hermes", "truncated JSON at the end", "<tool_call>{\"name\": \"f\", \"argu"),
        ToolCallFixture(
            "hermes", "closing tag missing at the end",
            "<tool_call>{\"name\": \"f\", \"arguments\": {\"n\": -1.5e3}}\n</tool_",
            content: nil, calls: [("f", #"{"n":-1.5e3}"#)]),
        ToolCallFixture(
            "hermes", "arguments as a JSON string and absent",
            "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": [true, null]}\"}</tool_call><tool_call>{\"name\": \"g\"}</tool_call>",
            content: nil, calls: [("f", #"{"a":[true,null]}"#), ("g", "{}")]),
        ToolCallFixture(
            "hermes", "unicode and escapes",
            "Café ☕ <tool_call>{\"name\": \"say\", \"arguments\": {\"text\": \"naïve 😀 \\u00e9 \\\"q\\\"\\n\"}}</tool_call> é\u{301}",
            content: "Café ☕ é\u{301}", calls: [("say", #"{"text":"naïve 😀 é \"q\"\n"}"#)]),
        ToolCallFixture(
            "hermes", "broken call before a good one",
            "<tool_call>{bad <tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>",
            content: "<tool_call>{bad", calls: [("f", "{}")]),
    ]

    static let llama3: [ToolCallFixture] = [
        .text("llama3_json", "plain text", "The answer is {probably} 42; see <docs>."),
        ToolCallFixture(
            "llama3_json", "one call",
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
            content: nil, calls: [("get_weather", #"{"city":"Paris"}"#)]),
        ToolCallFixture(
            "llama3_json", "python tag",
            "<|python_tag|>{\"name\": \"search\", \"parameters\": {\"query\": \"swift 6\"}}",
            content: nil, calls: [("search", #"{"query":"swift 6"}"#)]),
        ToolCallFixture(
            "llama3_json", "parallel calls separated by semicolons",
            "\n\n{\"name\": \"a\", \"parameters\": {\"x\": 1}}; {\"name\": \"b\", \"parameters\": {}};{\"type\": \"function\", \"name\": \"c\", \"arguments\": {}}",
            content: nil, calls: [("a", #"{"x":1}"#), ("b", "{}"), ("c", "{}")]),
        ToolCallFixture(
            "llama3_json", "text after calls",
            "{\"name\": \"a\", \"parameters\": {}}\nHope that helps; bye.",
            content: "\nHope that helps; bye.", calls: [("a", "{}")]),
        ToolCallFixture(
            "llama3_json", "text before a python tag",
            "Sure.\n<|python_tag|>{\"name\": \"a\", \"parameters\": {}}",
            content: "Sure.", calls: [("a", "{}")]),
        .text("llama3_json", "bare JSON after text is prose", "Here: {\"name\": \"a\", \"parameters\": {}}"),
        .text("llama3_json", "a JSON answer", "{\"answer\": 42, \"unit\": \"m\"}"),
        .text("llama3_json", "malformed JSON", "{\"name\": \"a\", \"parameters\": {]} and more"),
        .text("llama3_json", "look-alike tags", "a <|python_tags|> b <|python"),
        ToolCallFixture(
            "llama3_json", "trailing semicolon",
            "{\"name\": \"a\", \"parameters\": {}};",
            content: ";", calls: [("a", "{}")]),
    ]

    static let mistral: [ToolCallFixture] = [
        .text("mistral", "plain text", "See [1] and [the docs](https://example.com)."),
        ToolCallFixture(
            "mistral", "one call",
            "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
            content: nil, calls: [("get_weather", #"{"city":"Paris"}"#)]),
        ToolCallFixture(
            "mistral", "parallel calls",
            "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"x\": [1, 2]}}, {\"name\": \"b\", \"arguments\": {}, \"id\": \"abc123xyz\"}]",
            content: nil, calls: [("a", #"{"x":[1,2]}"#), ("b", "{}")]),
        ToolCallFixture(
            "mistral", "text before and after",
            "Checking. [TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}] Done.",
            content: "Checking. Done.", calls: [("a", "{}")]),
        ToolCallFixture(
            "mistral", "name [ARGS] form",
            "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_time[ARGS] {}",
            content: nil, calls: [("get_weather", #"{"city":"Paris"}"#), ("get_time", "{}")]),
        ToolCallFixture(
            "mistral", "single object",
            "[TOOL_CALLS]{\"name\": \"f\", \"arguments\": {\"a\": {\"b\": false}}}",
            content: nil, calls: [("f", #"{"a":{"b":false}}"#)]),
        ToolCallFixture(
            "mistral", "bare array at the start",
            "  [ {\"name\": \"f\", \"arguments\": {}}]",
            content: nil, calls: [("f", "{}")]),
        .text("mistral", "bare array after text", "x [{\"name\": \"f\", \"arguments\": {}}]"),
        .text("mistral", "malformed JSON", "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {]"),
        .text("mistral", "look-alike markers", "[TOOL] [TOOL_CALLSx] [TOOL_CALLS]get weather"),
        .text("mistral", "array that is not calls", "[1, 2, 3]"),
    ]

    static let pythonic: [ToolCallFixture] = [
        .text("pythonic", "plain text", "Use f(x) = [a, b] here."),
        ToolCallFixture(
            "pythonic", "one call", "[get_weather(city=\"Paris\", days=3)]",
            content: nil, calls: [("get_weather", #"{"city":"Paris","days":3}"#)]),
        ToolCallFixture(
            "pythonic", "parallel calls", "[f(a=1, b='x'), g()]",
            content: nil, calls: [("f", #"{"a":1,"b":"x"}"#), ("g", "{}")]),
        ToolCallFixture(
            "pythonic", "text after calls", "\n[f()]\nDone.",
            content: "\nDone.", calls: [("f", "{}")]),
        .text("pythonic", "text before calls", "Sure: [f()]"),
        ToolCallFixture(
            "pythonic", "Python literals",
            "[f(a=True, b=None, c=[1, 2.5, -3], d={'k': (1, 2)}, e=\"q\\\"uote\", g=1_000, h=.5, i=1., j=(7), k='\\x41\\u00e9')]",
            content: nil,
            calls: [
                (
                    "f",
                    #"{"a":true,"b":null,"c":[1,2.5,-3],"d":{"k":[1,2]},"e":"q\"uote","g":1000,"h":0.5,"i":1.0,"j":7,"k":"Aé"}"#
                )
            ]),
        .text("pythonic", "positional argument", "[f(1)]"),
        .text("pythonic", "list look-alikes", "[1, 2, 3] and [see docs]"),
        .text("pythonic", "mismatched brackets", "[f(a=1]"),
        .text("pythonic", "unclosed call", "[f(a='x'"),
        .text("pythonic", "repeated keyword", "[f(a=1, a=2)]"),
    ]

    static let all = hermes + llama3 + mistral + pythonic
}
