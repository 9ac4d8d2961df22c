import Foundation
import Testing

@testable import Shared

/// Property tests over seeded random inputs and chunkings.
///
/// "Accounts for every byte" means, for every input: the parse's segments joined in order are
/// the input byte for byte; its content is exactly the content segments joined; with no call
/// recognised the content is the input itself; every call has a valid name and arguments that
/// are a JSON object (checked with Foundation's parser too); and streaming the input in any
/// chunking rebuilds the same content (byte for byte) and the same calls, ids included.
@Suite("Tool-call parser fuzzing")
struct ToolCallFuzzTests {
    private static let tokens: [String] = [
        "<tool_call>", "</tool_call>", "<tool_", "<|python_tag|>", "<|python", "[TOOL_CALLS]", "[TOOL_", "[ARGS]",
        "{", "}", "[", "]", "(", ")", "\"", "'", "\\", ":", ",", ";", "=", " ", "\n", "\t", "\r\n",
        "\"name\"", "\"arguments\"", "\"parameters\"", "\"f\"", ": ", "get_weather", "a", "1", "-2.5e3", "true", "None",
        "null", "é", "😀", "\u{301}", "\u{0}", "\\u00e9", "\\ud83d", "x", "#",
        "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1, \"}\"]}}</tool_call>",
        "{\"name\": \"g\", \"parameters\": {}}",
        "[TOOL_CALLS][{\"name\": \"h\", \"arguments\": {\"q\": \"]\"}}]",
        "[TOOL_CALLS]k[ARGS]{\"z\": null}",
        "[f(a=1, b='x]'), g()]",
    ]

    private static func randomInput(using random: inout ToolCallTestRandom) -> String {
        var text = ""
        for _ in 0..<Int.random(in: 0...30, using: &random) {
            if Int.random(in: 0..<8, using: &random) == 0 {
                let bytes = (0..<Int.random(in: 1...8, using: &random)).map { _ in
                    UInt8.random(in: 0...255, using: &random)
                }
                text += String(decoding: bytes, as: UTF8.self)
            } else {
                text += tokens[Int.random(in: 0..<tokens.count, using: &random)]
            }
        }
        return text
    }

    private static func foundationAcceptsObject(_ json: String) -> Bool {
        (try? JSONSerialization.jsonObject(with: Data(json.utf8))) is [String: Any]
    }

    @Test(
        "random inputs and chunkings: no crash, every byte accounted for",
        arguments: ToolCallTestSupport.callingFamilies + ["none"])
    func randomInputs(_ family: String) {
        let parser = ToolCallTestSupport.parser(named: family)
        var random = ToolCallTestRandom(seed: 0xF022 &+ UInt64(family.utf8.count))
        var recognisedCalls = 0
        var failures: [String] = []
        for _ in 0..<400 {
            let input = Self.randomInput(using: &random)
            let parsed = parser.parse(input)
            recognisedCalls += parsed.toolCalls.count
            failures += ToolCallTestSupport.accountingFailures(of: parsed, input: input).map {
                "\($0) for \(input.debugDescription)"
            }
            for call in parsed.toolCalls where !Self.foundationAcceptsObject(call.function.arguments) {
                failures.append("Foundation rejects \(call.function.arguments.debugDescription)")
            }
            var chunkings = ToolCallTestSupport.randomChunkings(of: input, count: 3, using: &random)
            chunkings.append(input.unicodeScalars.map { String($0) })
            for chunks in chunkings
            where !ToolCallTestSupport.streamingMatches(parsed, ToolCallTestSupport.stream(parser, chunks)) {
                failures.append("streaming differs for \(chunks.debugDescription)")
            }
        }
        #expect(failures.isEmpty, "\(failures.count) failures, first: \(failures.first ?? "")")
        #expect(family == "none" || recognisedCalls > 0, "the fuzzer should exercise recognised calls too")
    }

    @Test("random bytes alone are plain text for every family", arguments: ToolCallTestSupport.callingFamilies)
    func randomBytes(_ family: String) {
        let parser = ToolCallTestSupport.parser(named: family)
        var random = ToolCallTestRandom(seed: 0xB17E5)
        for _ in 0..<200 {
            let bytes = (0..<Int.random(in: 0...64, using: &random)).map { _ in
                UInt8.random(in: 0...255, using: &random)
            }
            let input = String(decoding: bytes, as: UTF8.self)
            let parsed = parser.parse(input)
            #expect(ToolCallTestSupport.accountingFailures(of: parsed, input: input) == [])
            let chunks = ToolCallTestSupport.randomChunkings(of: input, count: 1, using: &random)[0]
            #expect(ToolCallTestSupport.streamingMatches(parsed, ToolCallTestSupport.stream(parser, chunks)))
        }
    }

    @Test("pathological nesting neither crashes nor recurses deeply", arguments: ToolCallTestSupport.callingFamilies)
    func deepNesting(_ family: String) {
        let parser = ToolCallTestSupport.parser(named: family)
        for opener in ["[", "{", "(", "[f(a=", "<tool_call>{\"a\":", "[TOOL_CALLS]"] {
            let input = opener + String(repeating: "[{(", count: 5000) + String(repeating: ")}]", count: 5000)
            let parsed = parser.parse(input)
            #expect(parsed.toolCalls.isEmpty)
            #expect(parsed.content == input)
        }
    }
}
