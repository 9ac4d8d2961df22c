import NIOCore
import NIOHTTP1
import Testing

@testable import HTTP1

/// `HeadBytes` writes what NIO's `ByteBuffer` writers wrote, piece for piece, in one
/// reservation.
@Suite struct HeadBytesTests {
    @Test func aHeadIsItsPiecesInOrderBehindWhatTheBufferHeld() {
        var out = ByteBuffer(string: "before|")
        let long = String(repeating: "v", count: 300)  // a heap string, and longer than the buffer's room
        out.writeHead { head in
            head.statusLine(404, version: .http1_1, reason: "Not Found")
            head.field("x-small", "ok")
            head.field(String("x-long"), long)
            head.field("x-utf8", "grüße ✓")
            head.field("x-empty", "")
            head.append(byte: UInt8(ascii: "!"))
            head.append("\r\n")
        }
        var expected = ByteBuffer(string: "before|")
        expected.writeString("HTTP/1.1 404 Not Found\r\nx-small: ok\r\nx-long: \(long)\r\nx-utf8: grüße ✓\r\nx-empty: \r\n!\r\n")
        #expect(out == expected)
    }

    @Test func anHTTP10ClientGetsAnHTTP10StatusLine() {
        var out = ByteBuffer()
        out.writeHead { $0.statusLine(200, version: .http1_0, reason: "OK") }
        #expect(String(buffer: out) == "HTTP/1.0 200 OK\r\n")
    }

    @Test(arguments: [0, 1, 9, 10, 99, 100, 12_345, 1 << 40, Int.max])
    func decimalsAreWhatStringPrints(_ value: Int) {
        var out = ByteBuffer()
        out.writeHead { $0.append(decimal: value) }
        #expect(String(buffer: out) == String(value))
    }

    @Test(arguments: [0, 1, 9, 10, 15, 16, 255, 256, 16 * 1024, 0xdead_beef, Int.max])
    func hexIsWhatStringPrints(_ value: Int) {
        var out = ByteBuffer()
        out.writeHead { $0.append(hex: value) }
        #expect(String(buffer: out) == String(value, radix: 16))
    }

    @Test func randomHeadsMatchTheByteBufferWriters() {
        var generator = SplitMix64(seed: 20_261_203)  // seeded: a failure can be replayed
        let words = [
            "", "a", "content-type", "application/json", String(repeating: "x", count: 15), String(repeating: "y", count: 16), "日本語テキスト",
            "req_0a7cacbd00000001",
        ]
        for _ in 0..<500 {
            var viaHead = ByteBuffer()
            var viaWriters = ByteBuffer()
            let fields = (0..<Int.random(in: 0...12, using: &generator)).map { _ in
                (words.randomElement(using: &generator)!, words.randomElement(using: &generator)!, Int.random(in: 0...Int.max, using: &generator))
            }
            viaHead.writeHead { head in
                for (name, value, number) in fields {
                    head.field(name, value)
                    head.append(decimal: number)
                    head.append(hex: number)
                }
            }
            for (name, value, number) in fields {
                viaWriters.writeString("\(name): \(value)\r\n\(number)\(String(number, radix: 16))")
            }
            #expect(viaHead == viaWriters)
        }
    }
}
