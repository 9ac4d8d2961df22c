/// The header lines of one part of a `multipart/form-data` body, read strictly: lines end with
/// CRLF, each is `name: value` (an RFC 9110 token, a value without control bytes but tab), and
/// exactly one is `Content-Disposition: form-data; name=...` (a token or a quoted string
/// without backslashes; no parameter twice; no `name*`, which python-multipart ignores but
/// older versions decoded). `Content-Type` may appear once; other lines are let through unread.
struct MultipartPartHeaders {
    /// `name`, as sent.
    let name: [UInt8]
    /// `filename`, as sent, when there is one (the part is a file).
    let filename: [UInt8]?
    /// `Content-Type`, when there is one.
    let contentType: [UInt8]?

    /// Reads `block`: the header lines, each with its CRLF, then the empty line's CRLF.
    init(block: [UInt8]) throws(MultipartFormError) {
        var disposition: [UInt8]?
        var contentType: [UInt8]?
        var lineStart = 0
        let linesEnd = block.count - 2
        while lineStart < linesEnd {
            var lineEnd = lineStart
            while block[lineEnd] != MultipartFormScanner.cr && block[lineEnd] != MultipartFormScanner.lf { lineEnd += 1 }
            guard block[lineEnd] == MultipartFormScanner.cr, block[lineEnd + 1] == MultipartFormScanner.lf else {
                throw .malformedPartHeaders("a header line ends with a bare CR or LF")
            }
            let line = block[lineStart..<lineEnd]
            lineStart = lineEnd + 2
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex,
                line[..<colon].allSatisfy(HeaderParameterReader.isTokenByte)
            else { throw .malformedPartHeaders("a header line is not 'Name: value'") }
            let value = Self.trimmed(line[(colon + 1)...])
            guard value.allSatisfy({ $0 == MultipartFormScanner.tab || ($0 >= 0x20 && $0 != 0x7F) }) else {
                throw .malformedPartHeaders("a header value holds a control character")
            }
            switch HeaderParameterReader.lowercased(line[..<colon]) {
            case Self.contentDispositionName:
                guard disposition == nil else { throw .malformedPartHeaders("a part has two Content-Disposition headers") }
                disposition = Array(value)
            case Self.contentTypeName:
                guard contentType == nil else { throw .malformedPartHeaders("a part has two Content-Type headers") }
                contentType = Array(value)
            default:
                break
            }
        }
        guard let disposition else { throw .malformedPartHeaders("a part has no Content-Disposition header") }
        (name, filename) = try Self.nameAndFilename(disposition)
        self.contentType = contentType
    }

    /// The scanner's report of the part.
    var part: MultipartFormScanner.Part {
        MultipartFormScanner.Part(
            name: String(decoding: name, as: UTF8.self), filename: filename.map { String(decoding: $0, as: UTF8.self) },
            contentType: contentType.map { String(decoding: $0, as: UTF8.self) })
    }

    private static func nameAndFilename(_ disposition: [UInt8]) throws(MultipartFormError) -> ([UInt8], [UInt8]?) {
        var reader = HeaderParameterReader(disposition)
        guard let type = reader.token(), HeaderParameterReader.lowercased(type) == Array("form-data".utf8) else {
            throw .malformedPartHeaders("a part's Content-Disposition is not form-data")
        }
        var name: [UInt8]?
        var filename: [UInt8]?
        while true {
            let parameter: HeaderParameterReader.Parameter?
            do {
                parameter = try reader.nextParameter()
            } catch {
                throw .malformedPartHeaders("Content-Disposition: \(error.reason)")
            }
            guard let parameter else { break }
            let key = HeaderParameterReader.lowercased(parameter.key)
            switch key {
            case Array("name".utf8):
                guard name == nil else { throw .malformedPartHeaders("Content-Disposition gives 'name' twice") }
                name = parameter.value
            case Array("filename".utf8):
                guard filename == nil else { throw .malformedPartHeaders("Content-Disposition gives 'filename' twice") }
                filename = parameter.value
            case _ where key.starts(with: Array("name*".utf8)):
                throw .malformedPartHeaders("Content-Disposition's 'name*' is not supported; use 'name'")
            default:
                break  // filename* (RFC 7578 forbids it; python-multipart ignores it) and others
            }
        }
        guard let name else { throw .malformedPartHeaders("a part's Content-Disposition has no name") }
        return (name, filename)
    }

    private static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        let isBlank = { (byte: UInt8) in byte == MultipartFormScanner.space || byte == MultipartFormScanner.tab }
        guard let first = bytes.firstIndex(where: { !isBlank($0) }), let last = bytes.lastIndex(where: { !isBlank($0) }) else { return [] }
        return bytes[first...last]
    }

    private static let contentDispositionName = Array("content-disposition".utf8)
    private static let contentTypeName = Array("content-type".utf8)
}
