import NIOCore
import Testing

@testable import Worker

@Suite struct ProxyExchangeTests {
    func count(_ text: String) -> Int? { ProxyExchange.wholeEventsWithoutUsage(ByteBuffer(string: text)) }

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
