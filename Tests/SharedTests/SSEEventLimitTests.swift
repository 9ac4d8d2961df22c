import Testing

@testable import Shared

/// An event that never ends is not buffered without limit (issue 20, finding 6).
@Suite struct SSEEventLimitTests {
    @Test func anEventLongerThanTheLimitOverflowsAndIsDropped() {
        var buffer = SSEEventBuffer(maxEventBytes: 1024)
        let chunk = Array("data: ".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 600)
        #expect(buffer.append(chunk).isEmpty)
        #expect(!buffer.overflowed)
        #expect(buffer.append([UInt8](repeating: UInt8(ascii: "x"), count: 600)).isEmpty)
        #expect(buffer.overflowed)
        #expect(buffer.pendingCount == 0, "the overlong event is not held")
    }

    @Test func wholeEventsUpToTheLimitPass() {
        var buffer = SSEEventBuffer(maxEventBytes: 1024)
        let event = Array("data: ".utf8) + [UInt8](repeating: UInt8(ascii: "y"), count: 1000) + [0x0A, 0x0A]
        for _ in 0..<50 { #expect(buffer.append(event) == [event]) }
        #expect(!buffer.overflowed)
    }

    @Test func eventsCompletedBeforeTheOverflowAreStillReturned() {
        var buffer = SSEEventBuffer(maxEventBytes: 1024)
        let whole = Array("data: {}\n\n".utf8)
        let events = buffer.append(whole + Array("data: ".utf8) + [UInt8](repeating: 0x7A, count: 2000))
        #expect(events == [whole])
        #expect(buffer.overflowed)
    }
}
