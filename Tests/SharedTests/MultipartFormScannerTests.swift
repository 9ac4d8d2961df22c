import Testing

@testable import Shared

/// Real bodies, each cut at every byte (and into 1-byte and 3-way pieces): the events, the
/// fields read, and the bytes written do not depend on where the network cut the body.
@Suite struct MultipartFormScannerTests {
    static let boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"

    /// File content with everything that looks like a boundary but is not one.
    static let trickyAudio: [UInt8] =
        Array("RIFF$\0\0\0WAVEfmt ".utf8) + [0, 1, 0xFF, 0xFE, 0x0D, 0x0A, 0x0D] + Array("\r\n--".utf8)
        + Array("\r\n--\(boundary.dropLast())".utf8) + Array("X--\(boundary)\r\n".utf8) + Array("\n--\(boundary)\r\n".utf8)
        + Array("\r\r\n-".utf8) + Array("--\(boundary)--".utf8) + [0x0D, 0x0D, 0x0A, 0x2D, 0x0D]

    struct Case: CustomStringConvertible, Sendable {
        let name: String
        let boundary: String
        let body: [UInt8]
        let events: [MultipartFormScanner.Event]
        let values: [String: String]
        var description: String { name }
    }

    static let file = MultipartFormScanner.Event.part(.init(name: "file", filename: "audio.wav", contentType: "audio/wav"))

    static let cases: [Case] = [
        Case(
            name: "model first", boundary: boundary,
            body: TestMultipart.body(
                boundary: boundary,
                parts: [.field("model", "whisper"), .field("language", "en"), .file(trickyAudio), .field("stream", "true")]),
            events: [
                .field(name: "model", value: "whisper"), .part(.init(name: "language")), file, .field(name: "stream", value: "true"), .end,
            ],
            values: ["model": "whisper", "stream": "true"]),
        Case(
            name: "model after the file", boundary: boundary,
            body: TestMultipart.body(
                boundary: boundary, parts: [.file(trickyAudio), .field("response_format", "json"), .field("model", "whisper-alias")]),
            events: [file, .part(.init(name: "response_format")), .field(name: "model", value: "whisper-alias"), .end],
            values: ["model": "whisper-alias"]),
        Case(
            name: "quoted boundary with specials, padding, preamble and epilogue", boundary: "a'()+_,-./:=? b",
            body: TestMultipart.body(
                boundary: "a'()+_,-./:=? b",
                parts: [.field("stream_include_usage", "false"), .file(Array("\r\n--a'()+_,-./:=? \r\n--a'()+_".utf8)), .field("model", "m")],
                preamble: "This is the preamble.\r\n--a'()+_ not yet\r\n", epilogue: "\r\nThis is the epilogue.\r\n--a'()+_,-./:=? b\r\n",
                padding: " \t "),
            events: [
                .field(name: "stream_include_usage", value: "false"), file, .field(name: "model", value: "m"), .end,
            ],
            values: ["model": "m", "stream_include_usage": "false"]),
        Case(
            name: "dashes before the boundary", boundary: "--x",
            body: TestMultipart.body(boundary: "--x", parts: [.file(Array("-----x----x\r\n---x".utf8))], preamble: "-----\r\n---\r\n"),
            events: [file, .end], values: [:]),
        Case(
            name: "empty values, headers in any case, extra headers", boundary: "b",
            body: Array(
                ("--b\r\ncontent-disposition: Form-Data; NAME=model\r\n\r\n\r\n--b\r\nCONTENT-DISPOSITION:form-data;name=\"\"\r\n"
                    + "X-Other: 1\r\n\r\nv\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\"\r\n\r\n\r\n--b--").utf8),
            events: [.field(name: "model", value: ""), .part(.init(name: "")), .part(.init(name: "file", filename: "")), .end],
            values: ["model": ""]),
        Case(
            name: "no parts", boundary: "b", body: Array("\r\n--b--\r\n".utf8), events: [.end], values: [:]),
        Case(
            name: "UTF-8 model and filename", boundary: "b",
            body: TestMultipart.body(boundary: "b", parts: [.field("model", "modèle-☃"), .file([1, 2], filename: "é.mp3", contentType: "audio/mpeg")]),
            events: [.field(name: "model", value: "modèle-☃"), .part(.init(name: "file", filename: "é.mp3", contentType: "audio/mpeg")), .end],
            values: ["model": "modèle-☃"]),
    ]

    @Test(arguments: cases)
    func everyCutGivesTheSameEventsAndTheBodyUnchanged(_ test: Case) {
        var driver = ScanDriver(boundary: test.boundary)
        for cuts in Self.cuts(of: test.body) {
            let outcome = driver.run(test.body, cuts: cuts)
            #expect(outcome.error == nil, "\(test.name), cuts \(cuts)")
            #expect(outcome.events == test.events, "\(test.name), cuts \(cuts)")
            #expect(outcome.values == test.values, "\(test.name), cuts \(cuts)")
            #expect(outcome.output == test.body, "\(test.name), cuts \(cuts)")
            if outcome.output != test.body || outcome.error != nil { break }
        }
        #expect(driver.violations.isEmpty, "\(test.name): \(driver.violations.prefix(3))")
    }

    @Test(arguments: cases)
    func threeWayCuts(_ test: Case) {
        guard test.body.count < 200 else { return }
        var driver = ScanDriver(boundary: test.boundary)
        let single = driver.run(test.body, cuts: [])
        for first in 0...test.body.count {
            for second in first...test.body.count {
                let outcome = driver.run(test.body, cuts: [first, second])
                if outcome != single {
                    Issue.record("\(test.name): cuts \([first, second]) differ")
                    return
                }
            }
        }
        #expect(driver.violations.isEmpty)
    }

    @Test(arguments: ["w", "a-much-longer-upstream-model-name/with-org/and-revision-0123456789"])
    func replacingTheModelWritesAValidBody(_ upstream: String) throws {
        let audio = Self.trickyAudio
        for order in [0, 1] {
            var parts: [TestPart] = [.field("model", "whisper"), .field("language", "en"), .file(audio), .field("stream", "true")]
            if order == 1 { parts.swapAt(0, 2) }
            let body = TestMultipart.body(boundary: Self.boundary, parts: parts)
            var expected = parts
            expected[expected.firstIndex { $0.name == "model" }!].content = Array(upstream.utf8)
            var driver = ScanDriver(boundary: Self.boundary, replacements: ["model": upstream])
            for cuts in Self.cuts(of: body) {
                let outcome = driver.run(body, cuts: cuts)
                #expect(outcome.error == nil)
                #expect(outcome.values["model"] == "whisper", "values keep what the client sent")
                #expect(outcome.output == TestMultipart.body(boundary: Self.boundary, parts: expected), "cuts \(cuts)")
                #expect(TestMultipart.parse(outcome.output, boundary: Self.boundary) == expected)
                if outcome.output != TestMultipart.body(boundary: Self.boundary, parts: expected) { break }
            }
            #expect(driver.violations.isEmpty)
            // And the scanner reads its own output the same way.
            var rereader = ScanDriver(boundary: Self.boundary)
            let reread = rereader.run(TestMultipart.body(boundary: Self.boundary, parts: expected), cuts: [])
            #expect(reread.values["model"] == upstream)
        }
    }

    @Test func anotherReadFieldCanBeReplacedToo() {
        let body = TestMultipart.body(boundary: "b", parts: [.field("stream", "1"), .field("stream_include_usage", "false")])
        var driver = ScanDriver(boundary: "b", replacements: ["stream": "true", "stream_include_usage": "true"])
        let outcome = driver.run(body, cuts: [7, 60])
        #expect(
            TestMultipart.parse(outcome.output, boundary: "b")
                == [.field("stream", "true"), .field("stream_include_usage", "true")])
    }

    @Test func aMissingModelCanBeAddedAtTheEnd() {
        for parts in [[TestPart.file([1, 2, 3])], []] {
            let body = TestMultipart.body(boundary: "b", parts: parts, epilogue: "\r\n")
            var driver = ScanDriver(boundary: "b", insert: ("model", "served"))
            for cuts in Self.cuts(of: body) {
                let outcome = driver.run(body, cuts: cuts)
                #expect(outcome.error == nil)
                #expect(outcome.values["model"] == "served")
                #expect(TestMultipart.parse(outcome.output, boundary: "b") == parts + [.field("model", "served")])
                #expect(outcome.output == TestMultipart.body(boundary: "b", parts: parts + [.field("model", "served")], epilogue: "\r\n"))
            }
            #expect(driver.violations.isEmpty)
        }
    }

    @Test func replacingAndInsertingOnlyWhenPaused() throws {
        var scanner = MultipartFormScanner(boundary: try MultipartBoundary("b"))
        var out: [UInt8] = []
        #expect(scanner.replaceValue(with: "x", into: &out) == false)
        #expect(scanner.insertField(name: "model", value: "x", into: &out) == false)
        var input = ArraySlice(TestMultipart.body(boundary: "b", parts: [.field("model", "m")]))
        #expect(try scanner.next(&input, into: &out) == .field(name: "model", value: "m"))
        #expect(scanner.model == "m")
        #expect(scanner.replaceValue(with: "x\r\n--b", into: &out) == false, "a value that would end the part")
        #expect(scanner.insertField(name: "model", value: "x", into: &out) == false)
        #expect(try scanner.next(&input, into: &out) == .end)
        #expect(scanner.hasEnded)
        #expect(scanner.insertField(name: "model", value: "again", into: &out) == false, "already given")
        #expect(scanner.insertField(name: "bad name", value: "x", into: &out) == false)
        #expect(try scanner.next(&input, into: &out) == nil)
        try scanner.finish(into: &out)
        #expect(out == TestMultipart.body(boundary: "b", parts: [.field("model", "m")]))
    }

    @Test func aFileIsNotHeldWhileItStreams() throws {
        var scanner = MultipartFormScanner(boundary: try MultipartBoundary("b"))
        var out: [UInt8] = []
        var head = ArraySlice(Array("--b\r\nContent-Disposition: form-data; name=file; filename=a.wav\r\n\r\n".utf8))
        #expect(try scanner.next(&head, into: &out) == .part(.init(name: "file", filename: "a.wav")))
        let megabyte = [UInt8](repeating: 0x0D, count: 1 << 20)
        for _ in 0..<8 {
            var chunk = megabyte[...]
            #expect(try scanner.next(&chunk, into: &out) == nil)
            #expect(scanner.heldCount <= 1 + 5)
        }
        #expect(out.count >= 8 << 20)
        #expect(scanner.model == nil)
    }

    @Test func booleansAsTheUpstreamReadsThem() {
        #expect(MultipartFormScanner.boolean("true") == true)
        #expect(MultipartFormScanner.boolean("YES") == true)
        #expect(MultipartFormScanner.boolean("1") == true)
        #expect(MultipartFormScanner.boolean("off") == false)
        #expect(MultipartFormScanner.boolean("False") == false)
        #expect(MultipartFormScanner.boolean(" true") == nil)
        #expect(MultipartFormScanner.boolean("2") == nil)
        #expect(MultipartFormScanner.boolean("") == nil)
    }

    /// Every single cut, and one byte at a time.
    static func cuts(of body: [UInt8]) -> [[Int]] {
        (0...body.count).map { [$0] } + [Array(1..<max(1, body.count))]
    }
}
