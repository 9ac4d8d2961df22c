import NIOCore
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
        #expect(count("data: {\"a\":1}\r\n\r\ndata: {\"b\":2}\n\n") == 2)
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
