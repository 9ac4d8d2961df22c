/// Seeded HTTP/1.x responses as an upstream sends them, for ``ResponseDifferentialTests``:
/// one to four back to back, each framed by length, chunked (extensions, trailers), not at
/// all (1xx, 204, 304) or by the close (the last only); field names in any case, values
/// with optional whitespace; optionally one ``Flaw`` in one of them.
struct ResponseGenerator {
    var random: SplitMix64

    init(seed: UInt64) {
        random = SplitMix64(seed: seed)
    }

    /// One thing wrong in one message; each is refused by ``HTTP1Parser``.
    enum Flaw: String, CaseIterable, Sendable, CustomStringConvertible {
        case bareLFEndingAField, bareCRInAValue, obsoleteLineFolding, spaceBeforeColon, invalidFieldName, controlCharacterInAValue
        case twoContentLengths, contentLengthNotDigits, statusCodeOfTwoDigits, versionNotSupported
        case chunkSizeNotHex, chunkSizeOfSixteenDigits, chunkDataLongerThanItsSize, bareLFEndingAChunkLine, spaceAfterChunkSize
        case bareLFInTrailers

        var description: String { rawValue }

        /// llhttp (strict, as NIO runs it) reads the flawed bytes anyway: the deliberate
        /// differences of docs/http1-parser.md.
        var llhttpAccepts: Bool {
            switch self {
            case .chunkSizeOfSixteenDigits: true
            default: false
            }
        }

        /// The framing of the message that carries the flaw.
        fileprivate var framing: Framing? {
            switch self {
            case .twoContentLengths, .contentLengthNotDigits: .length
            case .chunkSizeNotHex, .chunkSizeOfSixteenDigits, .chunkDataLongerThanItsSize, .bareLFEndingAChunkLine, .spaceAfterChunkSize,
                .bareLFInTrailers:
                .chunked
            default: nil
            }
        }
    }

    fileprivate enum Framing: CaseIterable {
        case length, chunked, informational, noContent, notModified, untilClose
    }

    /// A sequence of responses to as many requests, the last possibly ending with the close.
    mutating func responses(flaw: Flaw?) -> [UInt8] {
        let count = Int.random(in: 1...4, using: &random)
        let flawed = Int.random(in: 0..<count, using: &random)
        var bytes: [UInt8] = []
        for index in 0..<count {
            let last = index == count - 1
            let flaw = index == flawed ? flaw : nil
            var framing = flaw?.framing ?? Framing.allCases.randomElement(using: &random)!
            if framing == .untilClose && !last { framing = .length }
            if framing == .informational {
                bytes += message(.informational, last: false, flaw: flaw)
                framing = last ? .length : .chunked
                bytes += message(framing, last: last, flaw: nil)
            } else {
                bytes += message(framing, last: last, flaw: flaw)
            }
        }
        return bytes
    }

    private mutating func pick<T>(_ choices: [T]) -> T { choices.randomElement(using: &random)! }

    private mutating func chance(_ percent: Int) -> Bool { Int.random(in: 0..<100, using: &random) < percent }

    private mutating func inAnyCase(_ name: String) -> String {
        switch Int.random(in: 0..<3, using: &random) {
        case 0: name
        case 1: name.uppercased()
        default: name.split(separator: "-").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined(separator: "-")
        }
    }

    private mutating func bodyBytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    private mutating func message(_ framing: Framing, last: Bool, flaw: Flaw?) -> [UInt8] {
        // Only the last message may close the connection: llhttp refuses bytes after one.
        let version = last && framing != .chunked && chance(25) ? "HTTP/1.0" : "HTTP/1.1"
        let status: Int
        switch framing {
        case .informational: status = pick([100, 102, 103])
        case .noContent: status = 204
        case .notModified: status = 304
        default: status = pick([200, 200, 200, 201, 400, 404, 429, 500, 503])
        }
        let reason = pick([" OK", " ", "", " Some Reason", " Too Many Requests"])
        var statusLine = "\(version) \(status)\(reason)"
        switch flaw {
        case .statusCodeOfTwoDigits: statusLine = "\(version) 20\(reason)"
        case .versionNotSupported: statusLine = "HTTP/1.2 \(status)\(reason)"
        default: break
        }

        var fields: [(String, String)] = [(inAnyCase("server"), pick(["vllm", "uvicorn", "x/1.0 (y)"]))]
        if chance(70) { fields.append((inAnyCase("content-type"), pick(["application/json", "text/event-stream; charset=utf-8", "text/plain"]))) }
        if chance(30) { fields.append((inAnyCase("date"), "Fri, 04 Dec 2026 10:00:00 GMT")) }
        if chance(30) { fields.append((inAnyCase("x-request-id"), pick(["abc", "", "a b", "\"q\"", "k=v; w"]))) }
        if framing == .informational && status == 103 { fields.append((inAnyCase("link"), "</style.css>; rel=preload")) }
        if last && version == "HTTP/1.1" && chance(20) { fields.append((inAnyCase("connection"), "close")) }
        if !last && version == "HTTP/1.1" && chance(20) { fields.append((inAnyCase("connection"), "keep-alive")) }

        var body: [UInt8] = []
        switch framing {
        case .length:
            let length = Int.random(in: 0...40, using: &random)
            fields.append((inAnyCase("content-length"), chance(10) ? "00\(length)" : "\(length)"))
            body = bodyBytes(length)
        case .chunked:
            fields.append((inAnyCase("transfer-encoding"), pick(["chunked", "Chunked", "CHUNKED"])))
            body = chunks(flaw: flaw)
        case .noContent, .notModified:
            if chance(40) { fields.append((inAnyCase("content-length"), framing == .noContent ? "0" : "17")) }
        case .informational:
            break
        case .untilClose:
            body = bodyBytes(Int.random(in: 0...40, using: &random))
        }
        fields.shuffle(using: &random)

        // No tab after the framing fields' values: llhttp reads `chunked<HTAB>` as another
        // coding and refuses a length followed by one (docs/http1-parser.md).
        var lines = fields.map { name, value in
            let trailing = ["transfer-encoding", "content-length"].contains(name.lowercased()) ? [" "] : [" ", "\t"]
            return name + ":" + pick(["", " ", "  ", "\t"]) + value + (chance(20) ? pick(trailing) : "") + "\r\n"
        }
        let at = Int.random(in: 0..<lines.count, using: &random)
        switch flaw {
        case .bareLFEndingAField: lines[at] = String(lines[at].dropLast(2)) + "\n"
        case .bareCRInAValue: lines[at] = "x-a: b\rc\r\n"
        case .obsoleteLineFolding: lines.insert(" folded\r\n", at: at + 1)
        case .spaceBeforeColon: lines[at] = lines[at].replacingFirst(":", with: " :")
        case .invalidFieldName: lines.insert("x(y): 1\r\n", at: at)
        case .controlCharacterInAValue: lines.insert("x-a: b\u{1}c\r\n", at: at)
        case .twoContentLengths:
            let length = lines.first { $0.lowercased().hasPrefix("content-length:") }!
            lines.insert(length.replacingFirst(":", with: ": 1"), at: at)
        case .contentLengthNotDigits:
            let index = lines.firstIndex { $0.lowercased().hasPrefix("content-length:") }!
            lines[index] = String(lines[index].dropLast(2)).trimmingTrailingWhitespace() + "x\r\n"
        default: break
        }
        return Array((statusLine + "\r\n" + lines.joined() + "\r\n").utf8) + body
    }

    private mutating func chunks(flaw: Flaw?) -> [UInt8] {
        var bytes: [UInt8] = []
        let count = Int.random(in: 1...3, using: &random)
        let flawed = Int.random(in: 0..<count, using: &random)
        for index in 0..<count {
            let size = Int.random(in: 1...20, using: &random)
            var line = String(size, radix: 16, uppercase: chance(50))
            if chance(15) { line = "0" + line }
            if chance(30) { line += pick([";name", ";name=value", ";a=1;b=\"two words\""]) }
            var data = bodyBytes(size)
            var end = "\r\n"
            if index == flawed {
                switch flaw {
                case .chunkSizeNotHex: line = "g" + line
                case .chunkSizeOfSixteenDigits:
                    let digits = String(size, radix: 16)
                    line = String(repeating: "0", count: 16 - digits.count) + digits
                case .chunkDataLongerThanItsSize: data.append(UInt8(ascii: "x"))
                case .bareLFEndingAChunkLine: end = "\n"
                case .spaceAfterChunkSize: line = String(size, radix: 16) + " "
                default: break
                }
            }
            bytes += Array((line + end).utf8) + data + Array("\r\n".utf8)
        }
        bytes += Array(pick(["0", "000", "0;last"]).utf8) + Array("\r\n".utf8)
        if chance(40) || flaw == .bareLFInTrailers {
            bytes += Array("\(inAnyCase("x-trailer")): \(pick(["t", "a b", ""]))\r\n".utf8)
        }
        bytes += Array((flaw == .bareLFInTrailers ? "\n" : "\r\n").utf8)
        return bytes
    }
}

extension String {
    fileprivate func replacingFirst(_ target: Character, with replacement: String) -> String {
        guard let index = firstIndex(of: target) else { return self }
        return String(self[..<index]) + replacement + String(self[self.index(after: index)...])
    }

    fileprivate func trimmingTrailingWhitespace() -> String {
        String(reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
