/// The boundary of a `multipart/form-data` body, read from the request's `content-type`
/// (`multipart/form-data; boundary=XYZ`, quoted or not, parameter names in any case).
///
/// Read strictly, so the gateway never reads a body other than the way the upstream
/// (Starlette over python-multipart, in vLLM) does: a `boundary` given twice, one outside
/// RFC 2046's 1 to 70 characters, a `boundary*` parameter, or a `charset` other than UTF-8
/// (the upstream decodes field names with it) is refused rather than guessed at.
public struct MultipartBoundary: Sendable, Equatable {
    /// The boundary, without the leading `--`.
    public let bytes: [UInt8]

    /// The boundary of `contentType`, a `content-type` header's value.
    /// - Throws: ``MultipartFormError/notMultipart`` for another media type,
    ///   ``MultipartFormError/missingBoundary``, ``MultipartFormError/invalidBoundary``,
    ///   ``MultipartFormError/unsupportedCharset``.
    public init(contentType: String) throws(MultipartFormError) {
        bytes = try Self.parse(Array(contentType.utf8))
    }

    /// A boundary given directly (tests, and bodies the gateway writes itself).
    /// - Throws: ``MultipartFormError/invalidBoundary`` unless it is 1 to 70 of RFC 2046's characters.
    public init(_ boundary: String) throws(MultipartFormError) {
        let bytes = Array(boundary.utf8)
        guard Self.isValid(bytes) else { throw .invalidBoundary }
        self.bytes = bytes
    }

    /// RFC 2046's `bchars`: letters, digits, `'()+_,-./:=?` and space (not last).
    static func isValid(_ boundary: [UInt8]) -> Bool {
        guard (1...70).contains(boundary.count), boundary.last != UInt8(ascii: " ") else { return false }
        return boundary.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"): true
            default: Self.otherBChars.contains(byte)
            }
        }
    }

    private static let otherBChars = Set("'()+_,-./:=? ".utf8)

    private static func parse(_ text: [UInt8]) throws(MultipartFormError) -> [UInt8] {
        var reader = HeaderParameterReader(text)
        guard let type = reader.token(), reader.skip(UInt8(ascii: "/")), let subtype = reader.token(),
            HeaderParameterReader.lowercased(type) == Array("multipart".utf8), HeaderParameterReader.lowercased(subtype) == Array("form-data".utf8)
        else { throw .notMultipart }
        var boundary: [UInt8]?
        while true {
            let parameter: HeaderParameterReader.Parameter?
            do {
                parameter = try reader.nextParameter(lenientValues: true)
            } catch {
                throw .invalidBoundary
            }
            guard let parameter else { break }
            switch HeaderParameterReader.lowercased(parameter.key) {
            case Array("boundary".utf8):
                guard boundary == nil, Self.isValid(parameter.value) else { throw .invalidBoundary }
                boundary = parameter.value
            case Array("charset".utf8):
                guard Self.utf8Charsets.contains(HeaderParameterReader.lowercased(parameter.value)) else { throw .unsupportedCharset }
            case let key where key.starts(with: Array("boundary*".utf8)) || key.starts(with: Array("charset*".utf8)):
                throw .invalidBoundary
            default:
                break
            }
        }
        guard let boundary else { throw .missingBoundary }
        return boundary
    }

    private static let utf8Charsets: Set<[UInt8]> = [Array("utf-8".utf8), Array("utf8".utf8), Array("us-ascii".utf8), Array("ascii".utf8)]
}
