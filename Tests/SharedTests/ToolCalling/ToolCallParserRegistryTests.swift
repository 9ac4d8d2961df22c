import Testing

@testable import Shared

@Suite("Tool-call parser registry")
struct ToolCallParserRegistryTests {
    @Test("the standard registry knows every configured family")
    func standardNames() {
        #expect(ToolCallParserRegistry.standard.names == ["hermes", "llama3_json", "mistral", "none", "pythonic"])
        for name in ToolCallParserRegistry.standard.names {
            #expect(ToolCallParserRegistry.standard.parser(named: name)?.name == name)
            #expect(ToolCallParserRegistry.standard.contains(name))
        }
        #expect(ToolCallParserRegistry.standard.parser(named: "qwen3_xml") == nil)
        #expect(!ToolCallParserRegistry.standard.contains("Hermes"))
    }

    @Test("registering a name again replaces the parser")
    func register() {
        var registry = ToolCallParserRegistry([HermesToolCallParser.self])
        #expect(registry.names == ["hermes"])
        registry.register(NoToolCallParser.self)
        #expect(registry.names == ["hermes", "none"])
        #expect(registry.parser(named: "none").map { type(of: $0).supportsToolCalls } == false)
    }

    @Test("the id generator reaches the parser")
    func idGenerator() {
        let parser = ToolCallParserRegistry.standard.parser(
            named: "hermes", idGenerator: ToolCallIDGenerator { "id\($0)" })
        let parsed = parser?.parse("<tool_call>{\"name\": \"f\"}</tool_call><tool_call>{\"name\": \"g\"}</tool_call>")
        #expect(parsed?.toolCalls.map(\.id) == ["id0", "id1"])
    }
}
