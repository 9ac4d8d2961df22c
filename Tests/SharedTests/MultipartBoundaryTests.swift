import Testing

@testable import Shared

@Suite struct MultipartBoundaryTests {
    @Test(arguments: [
        ("multipart/form-data; boundary=abc123", "abc123"),
        ("multipart/form-data;boundary=abc123", "abc123"),
        ("Multipart/Form-Data; BOUNDARY=abc123", "abc123"),
        ("multipart/form-data; boundary=\"abc 123\"", "abc 123"),
        ("multipart/form-data; boundary=\"a'()+_,-./:=?b\"", "a'()+_,-./:=?b"),
        ("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW", "----WebKitFormBoundary7MA4YWxkTrZu0gW"),
        ("multipart/form-data; boundary=a=b/c", "a=b/c"),
        ("multipart/form-data; charset=utf-8; boundary=x", "x"),
        ("multipart/form-data; boundary=x; charset=\"UTF-8\"", "x"),
        ("multipart/form-data; boundary=x; other=1;", "x"),
        ("multipart/form-data ; boundary = x ", "x"),
        ("multipart/form-data; boundary=\(String(repeating: "b", count: 70))", String(repeating: "b", count: 70)),
    ])
    func readsTheBoundary(contentType: String, expected: String) throws {
        #expect(try MultipartBoundary(contentType: contentType).bytes == Array(expected.utf8))
    }

    @Test(arguments: [
        ("multipart/form-data", MultipartFormError.missingBoundary),
        ("multipart/form-data; charset=utf-8", .missingBoundary),
        ("multipart/form-data;", .missingBoundary),
        ("application/json; boundary=x", .notMultipart),
        ("multipart/mixed; boundary=x", .notMultipart),
        ("", .notMultipart),
        ("multipart/form-data; boundary=", .invalidBoundary),
        ("multipart/form-data; boundary=\"\"", .invalidBoundary),
        ("multipart/form-data; boundary=\(String(repeating: "b", count: 71))", .invalidBoundary),
        ("multipart/form-data; boundary=\"ends with space \"", .invalidBoundary),
        ("multipart/form-data; boundary=\"a\\\"b\"", .invalidBoundary),
        ("multipart/form-data; boundary=\"unterminated", .invalidBoundary),
        ("multipart/form-data; boundary=a b", .invalidBoundary),
        ("multipart/form-data; boundary=a; boundary=b", .invalidBoundary),
        ("multipart/form-data; boundary=a; BOUNDARY=a", .invalidBoundary),
        ("multipart/form-data; boundary*=utf-8''a", .invalidBoundary),
        ("multipart/form-data; boundary=\"a\u{e9}\"", .invalidBoundary),
        ("multipart/form-data; boundary=\"a\r\nb\"", .invalidBoundary),
        ("multipart/form-data; boundary=x; charset=utf-16", .unsupportedCharset),
        ("multipart/form-data; boundary=x; charset=latin-1", .unsupportedCharset),
    ])
    func refusesWhatItCannotReadAsTheUpstreamDoes(contentType: String, expected: MultipartFormError) {
        #expect(throws: expected) { try MultipartBoundary(contentType: contentType) }
    }

    @Test func theMissingBoundaryMessageIsVLLMs() {
        #expect(MultipartFormError.missingBoundary.message == "Missing boundary in multipart.")
        let error = MultipartFormError.repeatedField("model").gatewayError
        #expect(error.status == 400)
        #expect(error.param == "model")
        #expect(error.code == "duplicate_field")
    }

    @Test func aBoundaryGivenDirectlyIsChecked() {
        #expect(throws: MultipartFormError.invalidBoundary) { try MultipartBoundary("") }
        #expect(throws: MultipartFormError.invalidBoundary) { try MultipartBoundary("a\rb") }
        #expect((try? MultipartBoundary("ok-1")) != nil)
    }
}
