import Testing

@testable import Shared

/// Seeded random bodies and random cuts (no libFuzzer): whatever the chunks, the scanner gives
/// what it gives for the body in one piece; well-formed bodies come out unchanged (or with
/// their model replaced, and still well-formed); mutated bodies fail the same way at every cut.
@Suite struct MultipartFormScannerPropertyTests {
    static let names = ["model", "stream", "stream_include_usage", "file", "language", "temperature", "prompt", "m"]

    struct Body {
        var boundary: String
        var parts: [TestPart]
        var preamble: String
        var epilogue: String
        var bytes: [UInt8]
    }

    static func randomBoundary(_ rng: inout SplitMix64) -> String {
        let chars = Array("abcXYZ0189'()+_,-./:=? ----")
        var boundary: [Character] = (0..<(1 + Int(rng.next() % 24))).map { _ in chars[Int(rng.next() % UInt64(chars.count))] }
        if rng.next() % 3 == 0 { boundary = Array("----") + boundary }
        while boundary.last == " " { boundary.removeLast() }
        return boundary.isEmpty ? "b" : String(boundary)
    }

    static func randomBytes(_ rng: inout SplitMix64, boundary: String, maxCount: Int) -> [UInt8] {
        let pieces: [[UInt8]] = [[0x0D], [0x0A], [0x2D], Array("\r\n--".utf8), Array(boundary.utf8.prefix(3)), [0x00], [0xFF], Array("abc".utf8)]
        var out: [UInt8] = []
        for _ in 0..<Int(rng.next() % UInt64(maxCount + 1)) {
            if rng.next() % 5 == 0 {
                out.append(UInt8(truncatingIfNeeded: rng.next()))
            } else {
                out += pieces[Int(rng.next() % UInt64(pieces.count))]
            }
        }
        return out
    }

    static func randomBody(_ rng: inout SplitMix64) -> Body {
        let boundary = randomBoundary(&rng)
        let delimiter = Array("\r\n--\(boundary)".utf8)
        var parts: [TestPart] = []
        var seen: Set<String> = []
        for _ in 0..<Int(rng.next() % 6) {
            let name = names[Int(rng.next() % UInt64(names.count))]
            if MultipartFormScanner.gatewayFields.contains(name) {
                guard seen.insert(name).inserted else { continue }
                let value = String(decoding: randomBytes(&rng, boundary: boundary, maxCount: 6).filter { $0 < 0x80 && $0 != 0 }, as: UTF8.self)
                parts.append(.field(name, value))
            } else if rng.next() % 2 == 0 {
                parts.append(.file(randomBytes(&rng, boundary: boundary, maxCount: 60), name: name, filename: "f\(rng.next() % 10).wav"))
            } else {
                parts.append(TestPart(name: name, content: randomBytes(&rng, boundary: boundary, maxCount: 10)))
            }
        }
        parts = parts.map { part in
            var part = part
            while TestMultipart.find(delimiter, in: part.content, from: 0) != nil { part.content.removeFirst() }
            return part
        }
        let preamble = rng.next() % 4 == 0 ? "pre-amble\r\n\r\n" : ""
        let epilogue = rng.next() % 4 == 0 ? "\r\n--\(boundary)--\r\nafter" : ""
        return Body(
            boundary: boundary, parts: parts, preamble: preamble, epilogue: epilogue,
            bytes: TestMultipart.body(boundary: boundary, parts: parts, preamble: preamble, epilogue: epilogue))
    }

    static func randomCuts(_ rng: inout SplitMix64, count: Int) -> [Int] {
        if rng.next() % 8 == 0 { return Array(0...count) }
        return (0..<Int(rng.next() % 10)).map { _ in Int(rng.next() % UInt64(count + 1)) }
    }

    static func expectedEvents(_ parts: [TestPart]) -> [MultipartFormScanner.Event] {
        parts.map { part in
            MultipartFormScanner.gatewayFields.contains(part.name)
                ? .field(name: part.name, value: String(decoding: part.content, as: UTF8.self))
                : .part(.init(name: part.name, filename: part.filename, contentType: part.contentType))
        } + [.end]
    }

    @Test func wellFormedBodiesPassUnchangedAtAnyCut() {
        var rng = SplitMix64(seed: 0x4D55_4C54_4950_4152)
        for iteration in 0..<1500 {
            let body = Self.randomBody(&rng)
            var driver = ScanDriver(boundary: body.boundary)
            let single = driver.run(body.bytes, cuts: [])
            #expect(single.error == nil, "#\(iteration) \(body.parts)")
            #expect(single.output == body.bytes, "#\(iteration)")
            #expect(single.events == Self.expectedEvents(body.parts), "#\(iteration)")
            for _ in 0..<4 {
                let cuts = Self.randomCuts(&rng, count: body.bytes.count)
                #expect(driver.run(body.bytes, cuts: cuts) == single, "#\(iteration) cuts \(cuts)")
            }
            #expect(driver.violations.isEmpty, "#\(iteration) \(driver.violations.prefix(2))")
            if !driver.violations.isEmpty || single.output != body.bytes { return }
        }
    }

    @Test func aReplacedModelLeavesAWellFormedBody() {
        var rng = SplitMix64(seed: 0x5245_504C_4143_45)
        for iteration in 0..<800 {
            let body = Self.randomBody(&rng)
            let upstream = ["", "x", "org/some-much-longer-model-name-v2", "modèle"][Int(rng.next() % 4)]
            var expected = body.parts
            if let index = expected.firstIndex(where: { $0.name == "model" }) {
                expected[index].content = Array(upstream.utf8)
            } else {
                expected.append(.field("model", upstream))
            }
            var driver = ScanDriver(boundary: body.boundary, replacements: ["model": upstream], insert: ("model", upstream))
            let cuts = Self.randomCuts(&rng, count: body.bytes.count)
            let outcome = driver.run(body.bytes, cuts: cuts)
            #expect(outcome.error == nil)
            #expect(
                outcome.output == TestMultipart.body(boundary: body.boundary, parts: expected, preamble: body.preamble, epilogue: body.epilogue),
                "#\(iteration) cuts \(cuts)")
            var rereader = ScanDriver(boundary: body.boundary)
            let reread = rereader.run(outcome.output, cuts: [])
            #expect(reread.error == nil)
            #expect(reread.events == Self.expectedEvents(expected), "#\(iteration)")
            #expect(driver.violations.isEmpty)
        }
    }

    @Test func mutatedBodiesGiveTheSameOutcomeAtAnyCut() {
        var rng = SplitMix64(seed: 0x4D55_5441_5445)
        let alphabet: [UInt8] = Array("\r\n-;=\" \t:\\abmodel".utf8) + [0x00, 0xFF]
        var refused = 0
        for iteration in 0..<2500 {
            let body = Self.randomBody(&rng)
            var bytes = body.bytes
            for _ in 0..<(1 + Int(rng.next() % 3)) where !bytes.isEmpty {
                let at = Int(rng.next() % UInt64(bytes.count))
                let byte = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                switch rng.next() % 3 {
                case 0: bytes.remove(at: at)
                case 1: bytes.insert(byte, at: at)
                default: bytes[at] = byte
                }
            }
            var driver = ScanDriver(boundary: body.boundary)
            let single = driver.run(bytes, cuts: [])
            if single.error != nil {
                refused += 1
                #expect(single.output.count < bytes.count, "#\(iteration): a refused body was written whole")
            }
            for _ in 0..<3 {
                let cuts = Self.randomCuts(&rng, count: bytes.count)
                let chunked = driver.run(bytes, cuts: cuts)
                #expect(chunked.error == single.error, "#\(iteration) cuts \(cuts)")
                #expect(chunked.events == single.events, "#\(iteration) cuts \(cuts)")
                if single.error == nil { #expect(chunked.output == single.output, "#\(iteration) cuts \(cuts)") }
            }
            #expect(driver.violations.isEmpty, "#\(iteration) \(driver.violations.prefix(2))")
            if !driver.violations.isEmpty { return }
        }
        #expect(refused > 500, "the mutations reach the error paths")
    }
}
