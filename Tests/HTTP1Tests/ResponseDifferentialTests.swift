import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import HTTP1

/// The response side against NIO's `HTTPResponseDecoder` (llhttp, strict mode): seeded
/// responses of every framing an upstream uses (content-length, chunked with extensions
/// and trailers, close-delimited, 1xx before the final head, 204 and 304 that carry no body,
/// several back to back), valid, with one flaw, or with random bytes changed; the same
/// bytes go to both. Valid ones are read the same by both, whole and split anywhere; a flaw
/// is refused here; whatever the bytes, where both read a message they read the same one.
/// The cases where the two deliberately differ are listed in ``deliberateDifferences`` and
/// in docs/http1-parser.md.
@Suite struct ResponseDifferentialTests {
    /// One part of a parse: a head (as ``HTTP1ParserTests/describe(_:)`` prints it), the
    /// body bytes of a message joined, or its end.
    enum Event: Equatable {
        case head(String)
        case body([UInt8])
        case end
    }

    /// What a parser read from a connection's bytes up to its close, and whether it refused
    /// something (then what follows the refusal is not read).
    struct Transcript: Equatable {
        var events: [Event] = []
        var refused = false

        mutating func append(_ event: Event) {
            if case .body(let more) = event, case .body(let sofar) = events.last {
                events[events.count - 1] = .body(sofar + more)
            } else {
                events.append(event)
            }
        }

        /// Up to the end of the last complete message.
        var complete: [Event] { Array(events[..<((events.lastIndex(of: .end) ?? -1) + 1)]) }
    }

    /// This parser over `pieces` (one feed each), then the close.
    static func ours(_ pieces: [ArraySlice<UInt8>]) -> Transcript {
        var parser = HTTP1Parser<HTTPResponseHead>()
        var transcript = Transcript()
        func add(_ part: HTTPPart<HTTPResponseHead, ByteBuffer>) {
            switch part {
            case .head(let head): transcript.append(.head(HTTP1ParserTests.describe(head)))
            case .body(let buffer): transcript.append(.body(Array(buffer.readableBytesView)))
            case .end: transcript.append(.end)
            }
        }
        for piece in pieces {
            parser.feed(ByteBuffer(bytes: piece))
            do {
                while let part = try parser.next() { add(part) }
            } catch {
                transcript.refused = true
                return transcript
            }
        }
        if let end = parser.finish() { add(end) }
        return transcript
    }

    /// NIO's decoder over `pieces`, after as many POST requests as a test could send (it
    /// pairs each final response with a request), then the close. An informational head
    /// gets the end NIO does not send for it; field values lose their trailing whitespace,
    /// which llhttp keeps and RFC 9110 says is not part of the value.
    static func theirs(_ pieces: [ArraySlice<UInt8>]) -> Transcript {
        let decoder = HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes, informationalResponseStrategy: .forward)
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(decoder))
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        for _ in 0..<16 {
            _ = try? channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/")))
        }
        var transcript = Transcript()
        func read() {
            while let part = try? channel.readInbound(as: HTTPClientResponsePart.self) {
                switch part {
                case .head(var head):
                    head.headers = HTTPHeaders(
                        head.headers.map { ($0.name, String($0.value.reversed().drop { $0 == " " || $0 == "\t" }.reversed())) })
                    transcript.append(.head(HTTP1ParserTests.describe(head)))
                    if (100..<200).contains(head.status.code) && head.status.code != 101 { transcript.append(.end) }
                case .body(let buffer): transcript.append(.body(Array(buffer.readableBytesView)))
                case .end: transcript.append(.end)
                }
            }
        }
        do {
            for piece in pieces {
                try channel.writeInbound(ByteBuffer(bytes: piece))
                read()
            }
            channel.pipeline.fireChannelInactive()
            try channel.throwIfErrorCaught()
        } catch {
            transcript.refused = true
        }
        read()
        return transcript
    }

    /// Both parsers over the same bytes, whole.
    static func both(_ bytes: [UInt8]) -> (ours: Transcript, theirs: Transcript) {
        (ours([bytes[...]]), theirs([bytes[...]]))
    }

    @Test func validResponsesAreReadTheSameByBothParsers() {
        var generator = ResponseGenerator(seed: 20_261_204)
        var splitChecked = 0
        for round in 0..<1500 {
            let bytes = generator.responses(flaw: nil)
            let (ours, theirs) = Self.both(bytes)
            let text = String(decoding: bytes, as: UTF8.self).debugDescription
            #expect(ours == theirs && !ours.refused, "\(text)\nours: \(ours)\ntheirs: \(theirs)")
            #expect(ours.events.last == .end, "every generated response ends: \(text)")
            // Some are split in two at every byte boundary: neither parser may care.
            guard round % 60 == 0, ours == theirs else { continue }
            for cut in 1..<bytes.count {
                let pieces = [bytes[..<cut], bytes[cut...]]
                #expect(Self.ours(pieces) == ours, "split at \(cut): \(text)")
                #expect(Self.theirs(pieces) == theirs, "llhttp split at \(cut): \(text)")
            }
            splitChecked += 1
        }
        #expect(splitChecked >= 20)
    }

    /// One flaw in one message of a valid sequence: refused here, and whatever llhttp makes
    /// of it, the messages before it are the same.
    @Test(arguments: ResponseGenerator.Flaw.allCases)
    func aFlawIsRefusedAndWhatCameBeforeIsAgreed(_ flaw: ResponseGenerator.Flaw) {
        var generator = ResponseGenerator(seed: 7_000 + UInt64(ResponseGenerator.Flaw.allCases.firstIndex(of: flaw)!))
        var refusedByBoth = 0
        for _ in 0..<60 {
            let bytes = generator.responses(flaw: flaw)
            let (ours, theirs) = Self.both(bytes)
            let text = String(decoding: bytes, as: UTF8.self).debugDescription
            #expect(ours.refused, "\(flaw) accepted: \(text)\nours: \(ours)")
            let shorter = min(ours.complete.count, theirs.complete.count)
            #expect(ours.complete.prefix(shorter) == theirs.complete.prefix(shorter), "\(text)\nours: \(ours)\ntheirs: \(theirs)")
            if theirs.refused { refusedByBoth += 1 }
        }
        // Whether llhttp refuses it too is what the list of differences says.
        #expect((refusedByBoth == 60) == !flaw.llhttpAccepts, "\(flaw): llhttp refused \(refusedByBoth) of 60")
    }

    /// Valid sequences with random bytes inserted, deleted or replaced (a bias to the bytes
    /// framing turns on): where neither refuses they read the same messages; where one
    /// refuses, the messages before are the same.
    @Test func mutatedResponsesNeverReadAsDifferentMessages() {
        var generator = ResponseGenerator(seed: 11_235)
        let interesting: [UInt8] = Array("\r\n :;0159aAfF,\t-\u{0}".utf8) + [0x7F, 0x80, 0xFF]
        var agreedWhole = 0
        for _ in 0..<3000 {
            var bytes = generator.responses(flaw: nil)
            for _ in 0..<Int.random(in: 1...3, using: &generator.random) {
                let at = Int.random(in: 0..<bytes.count, using: &generator.random)
                let byte =
                    Bool.random(using: &generator.random)
                    ? interesting.randomElement(using: &generator.random)! : UInt8.random(in: 0...255, using: &generator.random)
                switch Int.random(in: 0..<3, using: &generator.random) {
                case 0: bytes.insert(byte, at: at)
                case 1: bytes.remove(at: at)
                default: bytes[at] = byte
                }
            }
            let (ours, theirs) = Self.both(bytes)
            let text = String(decoding: bytes, as: UTF8.self).debugDescription
            switch (ours.refused, theirs.refused) {
            case (false, false):
                #expect(ours.events == theirs.events, "\(text)\nours: \(ours)\ntheirs: \(theirs)")
                agreedWhole += 1
            case (false, true):
                #expect(ours.complete.starts(with: theirs.complete), "\(text)\nours: \(ours)\ntheirs: \(theirs)")
            case (true, false):
                #expect(theirs.complete.starts(with: ours.complete), "\(text)\nours: \(ours)\ntheirs: \(theirs)")
            case (true, true):
                let shorter = min(ours.complete.count, theirs.complete.count)
                #expect(ours.complete.prefix(shorter) == theirs.complete.prefix(shorter), "\(text)")
            }
        }
        #expect(agreedWhole > 300, "agreed on \(agreedWhole)")
    }

    /// Where the two parsers deliberately differ on a response (docs/http1-parser.md, which
    /// says why): refused here and read by llhttp, or the other way round.
    @Test(arguments: [
        ("two transfer-encoding fields", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", true),
        ("a chunk size of 16 digits", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000001\r\nx\r\n0\r\n\r\n", true),
        ("a status code under 100", "HTTP/1.1 099 X\r\ncontent-length: 0\r\n\r\n", true),
        ("content-length and transfer-encoding", "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", false),
        ("bytes after connection: close", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}HTTP/1.1 204 No Content\r\n\r\n", false),
        ("bytes after an HTTP/1.0 response", "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 204 No Content\r\n\r\n", false),
        ("whitespace before a chunk extension", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1 ;a\r\nx\r\n0\r\n\r\n", false),
        ("a chunk extension not a token", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a b\r\nx\r\n0\r\n\r\n", false),
        ("a content-length then a tab", "HTTP/1.1 200 OK\r\ncontent-length: 1\t\r\n\r\nx", false),
    ])
    func deliberateDifferences(name: String, text: String, refusedHere: Bool) {
        let (ours, theirs) = Self.both(Array(text.utf8))
        #expect(ours.refused == refusedHere, "\(name): \(ours)")
        #expect(theirs.refused == !refusedHere, "\(name): llhttp \(theirs)")
    }

    /// The one shape both read, as different messages: `chunked` then a tab. RFC 9110 makes
    /// the tab whitespace around the value, as here; llhttp reads another coding, so the
    /// body runs to the close (and refuses such a request). The gateway re-frames what it
    /// reads, so no second reader sees these bytes.
    @Test func chunkedThenATabIsChunkedHere() {
        let (ours, theirs) = Self.both(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n1\r\nx\r\n0\r\n\r\n".utf8))
        #expect(ours.events == [.head("200 HTTP/1.1 [Transfer-Encoding=chunked]"), .body(Array("x".utf8)), .end])
        #expect(theirs.events == [.head("200 HTTP/1.1 [Transfer-Encoding=chunked]"), .body(Array("1\r\nx\r\n0\r\n\r\n".utf8)), .end])
    }

    /// A 101 ends a message without a body here as any 1xx does, and the next head is read;
    /// NIO takes it for the final response. The gateway never asks for an upgrade.
    @Test func a101IsInformationalHere() {
        let text = "HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
        #expect(Self.ours([Array(text.utf8)[...]]).events == [.head("101 HTTP/1.1"), .end, .head("204 HTTP/1.1"), .end])
    }
}
