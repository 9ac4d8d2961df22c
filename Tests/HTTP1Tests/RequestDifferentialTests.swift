import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import HTTP1

/// The request side against NIO's `HTTPRequestDecoder` (llhttp, strict mode): where both
/// accept they read the same messages, and the cases where they deliberately differ
/// (docs/http1-parser.md).
@Suite struct RequestDifferentialTests {
    /// NIO's decoder (llhttp) run over the same bytes: the complete messages it read, and
    /// whether it refused something after them. Field values lose their trailing
    /// whitespace, which llhttp keeps and RFC 9110 says is not part of the value.
    static func llhttpTranscript(_ bytes: [UInt8]) -> (lines: [String], refused: Bool) {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
        defer { _ = try? channel.finish() }
        var refused = false
        do {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        } catch {
            refused = true
        }
        var lines: [String] = []
        while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) {
            switch part {
            case .head(var head):
                head.headers = HTTPHeaders(head.headers.map { ($0.name, String($0.value.reversed().drop { $0 == " " || $0 == "\t" }.reversed())) })
                lines.append(HTTP1ParserTests.describe(head))
            case .body(let buffer):
                let text = String(buffer: buffer)
                if let last = lines.last, last.hasPrefix("body ") { lines[lines.count - 1] = last + text } else { lines.append("body " + text) }
            case .end: lines.append("end")
            }
        }
        return (complete(lines), refused)
    }

    /// Up to the last complete message.
    static func complete(_ lines: [String]) -> [String] {
        Array(lines[..<((lines.lastIndex(of: "end") ?? -1) + 1)])
    }

    /// Seeded mutations of valid requests (bytes inserted, deleted, replaced, with a bias
    /// to the bytes framing turns on): where this parser accepts, llhttp reads the same
    /// messages, fields and bodies — all of them, or the ones before something it refuses
    /// (llhttp knows a fixed list of methods; any token is a method here, answered 404/405).
    /// Where llhttp accepts, this parser never reads the bytes as different messages.
    @Test func whereBothAcceptTheyReadTheSameMessages() {
        let seeds = [
            HTTP1ParserTests.pipelined,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcdGET / HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\nGET /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        ].map { Array($0.utf8) }
        let interesting: [UInt8] = Array("\r\n :;0159aAfF,\t-\u{0}".utf8) + [0x7F, 0x80, 0xFF]
        var random = SplitMix64(seed: 20_261_121)
        var agreedWhole = 0
        var refusedHereOnly = 0
        for round in 0..<4000 {
            var bytes = seeds[round % seeds.count]
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let at = Int.random(in: 0..<bytes.count, using: &random)
                let byte = Bool.random(using: &random) ? interesting.randomElement(using: &random)! : UInt8.random(in: 0...255, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes.insert(byte, at: at)
                case 1: bytes.remove(at: at)
                default: bytes[at] = byte
                }
            }
            let ours = HTTP1ParserTests.transcript(bytes, as: HTTPRequestHead.self)
            let refusedHere = ours.last?.hasPrefix("error") == true
            let oursComplete = Self.complete(refusedHere ? Array(ours.dropLast()) : ours)
            let theirs = Self.llhttpTranscript(bytes)
            let text = String(decoding: bytes, as: UTF8.self).debugDescription
            switch (refusedHere, theirs.refused) {
            case (false, false):
                #expect(oursComplete == theirs.lines, "\(text)")
                agreedWhole += 1
            case (false, true):
                #expect(oursComplete.starts(with: theirs.lines), "\(text)")
            case (true, false):
                #expect(theirs.lines.starts(with: oursComplete), "\(text)")
                refusedHereOnly += 1
            case (true, true):
                let shorter = min(oursComplete.count, theirs.lines.count)
                #expect(oursComplete.prefix(shorter) == theirs.lines.prefix(shorter), "\(text)")
            }
        }
        // The mutations must leave enough requests both accept whole to mean something.
        #expect(agreedWhole > 300, "agreed on \(agreedWhole); refused here only \(refusedHereOnly)")
    }

    /// Where the two parsers deliberately differ on a request (docs/http1-parser.md, which
    /// says why): refused here and read by llhttp, or the other way round. Bare CR or LF,
    /// obsolete folding, space before a colon, repeated or listed lengths, length beside
    /// transfer-encoding, HTTP/1.2, raw non-ASCII targets: both refuse.
    @Test(arguments: [
        ("transfer-encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true),
        ("a coding before chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", true),
        ("a chunk size of 16 digits", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000001\r\nx\r\n0\r\n\r\n", true),
        ("two spaces in the request line", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", true),
        ("no Host", "GET / HTTP/1.1\r\n\r\n", true),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", true),
        ("chunked then a tab", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n", false),
        ("whitespace before a chunk extension", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1 ;a\r\nx\r\n0\r\n\r\n", false),
        ("a chunk extension not a token", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a b\r\nx\r\n0\r\n\r\n", false),
        ("a content-length then a tab", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\t\r\n\r\nx", false),
        ("a method llhttp does not know", "FOO / HTTP/1.1\r\nHost: x\r\n\r\n", false),
        ("bytes after connection: close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", false),
        ("bytes after an HTTP/1.0 request", "GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", false),
    ])
    func deliberateDifferences(name: String, text: String, refusedHere: Bool) {
        let ours = HTTP1ParserTests.transcript(Array(text.utf8), as: PathRequestHead.self)
        #expect((ours.last?.hasPrefix("error") == true) == refusedHere, "\(name): \(ours)")
        let theirs = Self.llhttpTranscript(Array(text.utf8))
        #expect(theirs.refused == !refusedHere, "\(name): llhttp \(theirs)")
    }
}
