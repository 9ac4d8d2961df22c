import Testing

@testable import Shared

@Suite struct SSEEventBufferTests {
    @Test func eventsSurviveEveryChunkBoundary() {
        let stream = Array("data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n".utf8)
        for cut in 0...stream.count {
            var buffer = SSEEventBuffer()
            let events = buffer.append(stream[..<cut]) + buffer.append(stream[cut...])
            #expect(events.map { String(decoding: $0, as: UTF8.self) } == ["data: {\"a\":1}\n\n", "data: {\"b\":2}\r\n\r\n", "data: [DONE]\n\n"])
            #expect(buffer.pendingCount == 0)
        }
    }

    @Test func dataPayload() {
        #expect(SSEEventBuffer.data(of: Array("event: x\ndata: {\"a\":1}\n\n".utf8)) == Array("{\"a\":1}".utf8))
        #expect(SSEEventBuffer.data(of: Array(": comment\n\n".utf8)) == nil)
    }

    /// One rule for where an event ends (the SSE specification's): an empty line, whatever
    /// ends the lines. Each case is also cut at every byte.
    @Test(arguments: [
        ("LF LF", "data: a\n\ndata: b\n\n", ["data: a\n\n", "data: b\n\n"]),
        ("CR LF CR LF", "data: a\r\n\r\ndata: b\r\n\r\n", ["data: a\r\n\r\n", "data: b\r\n\r\n"]),
        ("CR CR", "data: a\r\rdata: b\r\r", ["data: a\r\r", "data: b\r\r"]),
        ("mixed", "event: x\r\ndata: a\n\r\ndata: b\r\n\n", ["event: x\r\ndata: a\n\r\n", "data: b\r\n\n"]),
        ("multi-line", "data: a\ndata: b\n\n", ["data: a\ndata: b\n\n"]),
    ])
    func anEventEndsAtAnEmptyLine(name: String, stream: String, expected: [String]) {
        let bytes = Array(stream.utf8)
        for cut in 0...bytes.count {
            var buffer = SSEEventBuffer()
            var events = buffer.append(bytes[..<cut]) + buffer.append(bytes[cut...])
            let rest = buffer.finish()
            if !rest.isEmpty { events.append(rest) }  // a final lone CR waits for the next byte
            #expect(events.map { String(decoding: $0, as: UTF8.self) } == expected, "\(name), cut at \(cut)")
        }
    }

    @Test func aLoneCRAtTheEndOfAReadWaitsForTheNextByte() {
        var buffer = SSEEventBuffer()
        #expect(buffer.append(Array("data: a\r\r".utf8)).isEmpty, "an LF may still follow")
        #expect(buffer.append(Array("data: b".utf8)) == [Array("data: a\r\r".utf8)])
        #expect(buffer.append(Array("\r\n\r".utf8)).isEmpty)
        #expect(buffer.append(Array("\n".utf8)) == [Array("data: b\r\n\r\n".utf8)])
    }

    @Test func dataLinesEndAtAnyLineEnd() {
        #expect(SSEEventBuffer.data(of: Array("data: a\rdata: b\r\ndata:c\n\n".utf8)) == Array("a\nb\nc".utf8))
    }
}
