import Testing

@testable import Shared

/// The seeded generator for reproducible chunkings and fuzz inputs.
typealias ToolCallTestRandom = SplitMix64

/// Helpers shared by the tool-calling tests.
enum ToolCallTestSupport {
    /// Every family that parses calls, with reproducible ids.
    static func parser(named name: String) -> any ToolCallParser {
        guard let parser = ToolCallParserRegistry.standard.parser(named: name, idGenerator: .seeded(7)) else {
            fatalError("unknown parser \(name)")
        }
        return parser
    }

    /// The names of the families that parse calls.
    static let callingFamilies = ["hermes", "llama3_json", "mistral", "pythonic"]

    /// Streams `chunks` through a fresh streaming parser and rebuilds the message.
    static func stream(_ parser: any ToolCallParser, _ chunks: [String]) -> ToolCallStreamAccumulator {
        var streaming = parser.makeStreamingParser()
        var accumulator = ToolCallStreamAccumulator()
        for chunk in chunks { accumulator.apply(streaming.feed(chunk)) }
        accumulator.apply(streaming.finish())
        return accumulator
    }

    /// Whether streaming `chunks` rebuilds exactly `parsed` (content compared byte for byte).
    static func streamingMatches(_ parsed: ParsedToolCalls, _ streamed: ToolCallStreamAccumulator) -> Bool {
        Array((parsed.content ?? "").utf8) == Array(streamed.content.utf8) && parsed.toolCalls == streamed.toolCalls
    }

    /// Splits `text` at the given Unicode-scalar offsets.
    static func split(_ text: String, at offsets: [Int]) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var chunks: [String] = []
        var start = 0
        for offset in offsets + [scalars.count] {
            var chunk = String.UnicodeScalarView()
            chunk.append(contentsOf: scalars[start..<offset])
            chunks.append(String(chunk))
            start = offset
        }
        return chunks
    }

    /// Every chunking into one, two or (for short texts) three pieces, plus one scalar per chunk.
    static func exhaustiveChunkings(of text: String, threeWayLimit: Int = 160) -> [[String]] {
        let count = text.unicodeScalars.count
        var chunkings = [[text], split(text, at: Array(0..<count).filter { $0 > 0 })]
        for first in 0...count {
            chunkings.append(split(text, at: [first]))
        }
        if count <= threeWayLimit {
            for first in 1..<max(count, 1) {
                for second in first..<count {
                    chunkings.append(split(text, at: [first, second]))
                }
            }
        }
        return chunkings
    }

    /// `count` random chunkings, including empty chunks.
    static func randomChunkings(of text: String, count: Int, using random: inout ToolCallTestRandom) -> [[String]] {
        let length = text.unicodeScalars.count
        return (0..<count).map { _ in
            let cuts = (0..<Int.random(in: 0...max(1, length / 2), using: &random)).map { _ in
                Int.random(in: 0...length, using: &random)
            }
            return split(text, at: cuts.sorted())
        }
    }

    /// Checks the accounting rules of a parse result against its input; returns the failures.
    static func accountingFailures(of parsed: ParsedToolCalls, input: String) -> [String] {
        var failures: [String] = []
        var joined: [UInt8] = []
        var content: [UInt8] = []
        var nextIndex = 0
        for segment in parsed.segments {
            switch segment {
            case .content(let text):
                joined += text.utf8
                content += text.utf8
            case .toolCalls(let source, let indices):
                joined += source.utf8
                if indices.lowerBound != nextIndex || indices.isEmpty { failures.append("call indices \(indices)") }
                nextIndex = indices.upperBound
            }
        }
        if joined != Array(input.utf8) { failures.append("segments do not rebuild the input") }
        if content != Array((parsed.content ?? "").utf8) { failures.append("content is not the content segments") }
        if nextIndex != parsed.toolCalls.count { failures.append("segments cover \(nextIndex) calls") }
        if parsed.toolCalls.isEmpty, Array((parsed.content ?? "").utf8) != Array(input.utf8) {
            failures.append("no call, yet content differs from the input")
        }
        if parsed.content == "" { failures.append("empty content is not nil") }
        for call in parsed.toolCalls {
            if !ToolFunctionName.isValid(call.function.name) { failures.append("bad name \(call.function.name)") }
            guard case .object? = ToolCallJSONParser.parse(call.function.arguments) else {
                failures.append("arguments not a JSON object: \(call.function.arguments)")
                continue
            }
        }
        return failures
    }
}
