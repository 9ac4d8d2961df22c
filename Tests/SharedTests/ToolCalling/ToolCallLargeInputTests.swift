import Testing

@testable import Shared

/// Long outputs, streamed in small chunks as vLLM sends tokens: the same result as `parse`,
/// and (by construction of the scanner) work linear in the input.
@Suite("Tool-call parsers on large inputs")
struct ToolCallLargeInputTests {
    private static let filler = String(repeating: "lorem ipsum <b> [x] {y} (z) ", count: 1500)

    private static func inputs(for family: String) -> [String] {
        let call: String
        switch family {
        case "hermes": call = "<tool_call>{\"name\": \"f\", \"arguments\": {\"text\": \"\(filler)\"}}</tool_call>"
        case "llama3_json": call = "{\"name\": \"f\", \"parameters\": {\"text\": \"\(filler)\"}}"
        case "mistral": call = "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"text\": \"\(filler)\"}}]"
        default: call = "[f(text=\"\(filler)\")]"
        }
        let blank = String(repeating: " \n", count: 20_000)
        return [call, filler, String(call.prefix(call.count / 2)), blank + call + blank, "x" + blank]
    }

    @Test(
        "large calls and texts stream in 4-byte chunks to the parse result",
        arguments: ToolCallTestSupport.callingFamilies)
    func largeInputs(_ family: String) {
        let parser = ToolCallTestSupport.parser(named: family)
        for (offset, input) in Self.inputs(for: family).enumerated() {
            let parsed = parser.parse(input)
            #expect(parsed.toolCalls.count == (offset == 0 || offset == 3 ? 1 : 0))
            #expect(ToolCallTestSupport.accountingFailures(of: parsed, input: input) == [])
            var chunks: [String] = []
            var chunk = ""
            for character in input {
                chunk.append(character)
                if chunk.utf8.count >= 4 {
                    chunks.append(chunk)
                    chunk = ""
                }
            }
            chunks.append(chunk)
            #expect(ToolCallTestSupport.streamingMatches(parsed, ToolCallTestSupport.stream(parser, chunks)))
        }
    }
}
