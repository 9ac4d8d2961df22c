@testable import Shared

/// One part of a body the tests build.
struct TestPart: Equatable, CustomStringConvertible {
    var name: String
    var filename: String?
    var contentType: String?
    var content: [UInt8]
    /// Extra header lines (each without its CRLF), written after Content-Disposition.
    var extraHeaders: [String] = []

    static func field(_ name: String, _ value: String) -> TestPart { TestPart(name: name, content: Array(value.utf8)) }
    static func file(_ content: [UInt8], name: String = "file", filename: String = "audio.wav", contentType: String = "audio/wav") -> TestPart {
        TestPart(name: name, filename: filename, contentType: contentType, content: content)
    }

    var description: String { "\(name)\(filename.map { "(\($0))" } ?? "")=\(content.count)B" }
}

/// Builds `multipart/form-data` bodies the way clients write them.
enum TestMultipart {
    static func body(boundary: String, parts: [TestPart], preamble: String = "", epilogue: String = "", padding: String = "") -> [UInt8] {
        var out = Array(preamble.utf8)
        for part in parts {
            out += Array("--\(boundary)\(padding)\r\n".utf8)
            var disposition = "Content-Disposition: form-data; name=\"\(part.name)\""
            if let filename = part.filename { disposition += "; filename=\"\(filename)\"" }
            out += Array("\(disposition)\r\n".utf8)
            if let contentType = part.contentType { out += Array("Content-Type: \(contentType)\r\n".utf8) }
            for line in part.extraHeaders { out += Array("\(line)\r\n".utf8) }
            out += Array("\r\n".utf8) + part.content + Array("\r\n".utf8)
        }
        out += Array("--\(boundary)--".utf8) + Array(epilogue.utf8)
        return out
    }

    /// A plain reading of a well-formed body, independent of the scanner: the parts between
    /// the first `--boundary` (at the start or after CRLF) and the closing one.
    static func parse(_ body: [UInt8], boundary: String) -> [TestPart]? {
        let dash = Array("--\(boundary)".utf8)
        let delimiter = Array("\r\n".utf8) + dash
        var cursor: Int
        if body.starts(with: dash) {
            cursor = dash.count
        } else if let found = find(delimiter, in: body, from: 0) {
            cursor = found + delimiter.count
        } else {
            return nil
        }
        var parts: [TestPart] = []
        while true {
            if body[cursor...].starts(with: Array("--".utf8)) { return parts }
            while cursor < body.count, body[cursor] == 0x20 || body[cursor] == 0x09 { cursor += 1 }
            guard body[cursor...].starts(with: Array("\r\n".utf8)) else { return nil }
            cursor += 2
            guard let headersEnd = find(Array("\r\n\r\n".utf8), in: body, from: cursor - 2) else { return nil }
            let headerText = String(decoding: body[cursor..<headersEnd], as: UTF8.self)
            guard let next = find(delimiter, in: body, from: headersEnd + 4) else { return nil }
            var part = TestPart(name: "", content: Array(body[(headersEnd + 4)..<next]))
            for line in headerText.split(separator: "\r\n", omittingEmptySubsequences: true) {
                let pieces = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: " \t") }
                guard pieces.count == 2 else { return nil }
                switch pieces[0].lowercased() {
                case "content-disposition":
                    part.name = parameter("name", in: pieces[1]) ?? ""
                    part.filename = parameter("filename", in: pieces[1])
                case "content-type": part.contentType = pieces[1]
                default: part.extraHeaders.append(String(line))
                }
            }
            parts.append(part)
            cursor = next + delimiter.count
        }
    }

    private static func parameter(_ key: String, in value: String) -> String? {
        for item in value.split(separator: ";").dropFirst() {
            let pair = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: " \t") }
            if pair.count == 2, pair[0].lowercased() == key {
                return pair[1].hasPrefix("\"") ? String(pair[1].dropFirst().dropLast()) : pair[1]
            }
        }
        return nil
    }

    static func find(_ pattern: [UInt8], in bytes: [UInt8], from start: Int) -> Int? {
        guard bytes.count >= pattern.count, start <= bytes.count - pattern.count else { return nil }
        return (start...(bytes.count - pattern.count)).first { bytes[$0..<($0 + pattern.count)].elementsEqual(pattern) }
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        String(self.drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String { String(self).trimmingCharacters(in: set) }
}

/// What a scan of a body, cut into chunks, gave.
struct ScanOutcome: Equatable {
    var output: [UInt8] = []
    var events: [MultipartFormScanner.Event] = []
    var values: [String: String] = [:]
    var error: MultipartFormError?
}

/// Runs a scanner over `body` cut at `cuts`, replacing read fields' values from
/// `replacements` and inserting `insert` at the end, checking the scanner's bookkeeping on
/// the way: what it wrote plus what it holds is what it was given (when nothing is
/// replaced), and inside a file it holds no more than the delimiter.
struct ScanDriver {
    var boundary: String
    var replacements: [String: String] = [:]
    var insert: (name: String, value: String)?
    var limits = MultipartFormScanner.Limits()
    /// Bookkeeping violations seen (empty when all is well).
    var violations: [String] = []

    init(boundary: String, replacements: [String: String] = [:], insert: (name: String, value: String)? = nil) {
        self.boundary = boundary
        self.replacements = replacements
        self.insert = insert
    }

    mutating func run(_ body: [UInt8], cuts: [Int]) -> ScanOutcome {
        var outcome = ScanOutcome()
        var scanner = MultipartFormScanner(boundary: try! MultipartBoundary(boundary), limits: limits)
        let delimiterCount = boundary.utf8.count + 4
        var given = 0
        var chunkStart = 0
        for end in cuts.sorted() + [body.count] where end >= chunkStart {
            var chunk = body[chunkStart..<end]
            chunkStart = end
            given += chunk.count
            do {
                while let event = try scanner.next(&chunk, into: &outcome.output) {
                    outcome.events.append(event)
                    switch event {
                    case .field(let name, _):
                        if let replacement = replacements[name], !scanner.replaceValue(with: replacement, into: &outcome.output) {
                            violations.append("replaceValue refused at .field")
                        }
                    case .end:
                        if let insert, scanner.values[insert.name] == nil,
                            !scanner.insertField(name: insert.name, value: insert.value, into: &outcome.output)
                        {
                            violations.append("insertField refused at .end")
                        }
                    case .part:
                        break
                    }
                }
            } catch {
                outcome.error = error
                outcome.values = scanner.values
                return outcome
            }
            if replacements.isEmpty && insert == nil && outcome.output.count + scanner.heldCount != given {
                violations.append("wrote \(outcome.output.count) + held \(scanner.heldCount) != given \(given)")
            }
            if scanner.isPassingContentThrough, scanner.heldCount > delimiterCount {
                violations.append("held \(scanner.heldCount) bytes of a file")
            }
            if !scanner.hasEnded && given > 0 && scanner.heldCount == 0 {
                violations.append("held nothing before the closing boundary")
            }
        }
        do {
            try scanner.finish(into: &outcome.output)
        } catch {
            outcome.error = error
        }
        outcome.values = scanner.values
        return outcome
    }
}
