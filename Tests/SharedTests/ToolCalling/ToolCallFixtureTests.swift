import Testing

@testable import Shared

/// Every fixture of every family: the parse, its accounting, and streaming under every chunking.
@Suite("Tool-call fixtures")
struct ToolCallFixtureTests {
    @Test("parse gives the expected content and calls", arguments: ToolCallFixtures.all)
    func parseMatchesFixture(_ fixture: ToolCallFixture) {
        let parsed = ToolCallTestSupport.parser(named: fixture.family).parse(fixture.input)
        #expect(parsed.content.map { Array($0.utf8) } == fixture.content.map { Array($0.utf8) })
        #expect(
            parsed.toolCalls.map {
                ToolCallFixture.ExpectedCall(name: $0.function.name, arguments: $0.function.arguments)
            } == fixture.calls)
        #expect(parsed.finishReason(replacing: "stop") == (fixture.calls.isEmpty ? "stop" : "tool_calls"))
        #expect(ToolCallTestSupport.accountingFailures(of: parsed, input: fixture.input) == [])
    }

    @Test("streaming split at every boundary equals parse", arguments: ToolCallFixtures.all)
    func streamingEqualsParseForEveryChunking(_ fixture: ToolCallFixture) {
        let parser = ToolCallTestSupport.parser(named: fixture.family)
        let parsed = parser.parse(fixture.input)
        var failures: [[String]] = []
        for chunks in ToolCallTestSupport.exhaustiveChunkings(of: fixture.input) {
            let streamed = ToolCallTestSupport.stream(parser, chunks)
            if !ToolCallTestSupport.streamingMatches(parsed, streamed) { failures.append(chunks) }
        }
        #expect(failures.isEmpty, "first failing chunking: \(failures.first ?? [])")
    }

    @Test("streaming with seeded random chunkings equals parse", arguments: ToolCallFixtures.all)
    func streamingEqualsParseForRandomChunkings(_ fixture: ToolCallFixture) {
        let parser = ToolCallTestSupport.parser(named: fixture.family)
        let parsed = parser.parse(fixture.input)
        var random = ToolCallTestRandom(seed: 0x5EED)
        let failures = ToolCallTestSupport.randomChunkings(of: fixture.input, count: 300, using: &random).filter {
            !ToolCallTestSupport.streamingMatches(parsed, ToolCallTestSupport.stream(parser, $0))
        }
        #expect(failures.isEmpty, "first failing chunking: \(failures.first ?? [])")
    }

    @Test("other families leave the fixture's text intact", arguments: ToolCallFixtures.all)
    func otherFamiliesAccountForEveryByte(_ fixture: ToolCallFixture) {
        for family in ToolCallTestSupport.callingFamilies + ["none"] where family != fixture.family {
            let parser = ToolCallTestSupport.parser(named: family)
            let parsed = parser.parse(fixture.input)
            #expect(ToolCallTestSupport.accountingFailures(of: parsed, input: fixture.input) == [], "\(family)")
            #expect(
                ToolCallTestSupport.streamingMatches(
                    parsed, ToolCallTestSupport.stream(parser, fixture.input.map(String.init))))
        }
    }
}
