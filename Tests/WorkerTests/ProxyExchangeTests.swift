import NIOCore
import Shared
import Testing

@testable import Worker

@Suite struct ProxyExchangeTests {
    func count(_ text: String) -> Int? { ProxyExchange.wholeEventsWithoutUsage(ByteBuffer(string: text)) }

    @Test(arguments: [
        ("text/event-stream", true), ("text/event-stream; charset=utf-8", true), ("Text/Event-Stream", true),
        ("TEXT/EVENT-STREAM;charset=utf-8", true), ("application/json", false), ("text/event-strea", false),
        ("text/event_stream", false), ("text/event\rstream", false), ("", false),
    ])
    func anEventStreamIsRecognisedInAnyCase(contentType: String, expected: Bool) {
        #expect(ProxyExchange.isEventStream(contentType) == expected)
    }

    @Test func aReadOfWholeEventsWithoutUsagePassesAsItIs() {
        #expect(count("data: {\"choices\":[]}\n\n") == 1)
        #expect(count("data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n") == 3)
        #expect(count("data: {\"a\":1}\r\n\r\ndata: {\"b\":2}\n\n") == nil, "a CR anywhere: the event-by-event path decides")
    }

    /// The byte-by-byte count `countBlankLines` replaced: a line feed whose last byte
    /// before it, CRs skipped, is a line feed.
    static func referenceCount(_ bytes: [UInt8]) -> Int {
        var count = 0
        var previous: UInt8 = 0
        for byte in bytes {
            if byte == 0x0A && previous == 0x0A { count += 1 }
            previous = byte == 0x0D ? previous : byte
        }
        return count
    }

    @Test func blankLinesAreCountedAsByteByByte() {
        // Every string of up to 7 bytes over LF, CR and one other byte, then random longer ones.
        let alphabet: [UInt8] = [0x0A, 0x0D, 0x61]
        var cases: [[UInt8]] = [[]]
        var frontier: [[UInt8]] = [[]]
        for _ in 1...7 {
            frontier = frontier.flatMap { prefix in alphabet.map { prefix + [$0] } }
            cases += frontier
        }
        var random = SplitMix64(seed: 20_261_203)
        for _ in 0..<2000 {
            cases.append((0..<Int.random(in: 8...200, using: &random)).map { _ in alphabet.randomElement(using: &random)! })
        }
        for bytes in cases {
            let counted = bytes.withUnsafeBytes { ProxyExchange.countBlankLines($0) }
            #expect(counted == Self.referenceCount(bytes), "\(bytes)")
        }
    }

    @Test func anythingElseTakesTheEventByEventPath() {
        #expect(count("data: {\"a\":1}\n\ndata: {\"b\"") == nil, "ends inside an event")
        #expect(count("data: {\"a\":1}\n") == nil)
        #expect(count("data: {\"a\":1}\r\n\r\n") == nil, "a CRLF ending is left to the general path")
        #expect(count("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n") == nil)
        #expect(count("data: {\"a\":1}\n\ndata: {\"usage\":null}\n\n") == nil)
        #expect(count("") == nil)
    }
}
