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
}
