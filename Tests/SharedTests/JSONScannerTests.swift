import Testing

@testable import Shared

@Suite struct JSONScannerTests {
    func members(_ text: String) throws -> [JSONScanner.Member] { try JSONScanner.objectMembers(Array(text.utf8)) }

    @Test func findsTopLevelMembersAndTheirRanges() throws {
        let text = #"{"model": "m\u00e9", "stream" : true, "x": {"model": 1}, "n": -1.5e3, "a": [1, {"b": null}]}"#
        let found = try members(text)
        #expect(found.map(\.key) == ["model", "stream", "x", "n", "a"])
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { raw in
            #expect(JSONScanner.string(raw, found[0].value) == "mé")
        }
        #expect(String(decoding: bytes[found[2].value], as: UTF8.self) == #"{"model": 1}"#)
    }

    @Test(arguments: [
        "", "[]", "{", #"{"a":}"#, #"{"a":1,}"#, #"{"a" 1}"#, #"{"a":01}"#, #"{"a":1.}"#, #"{"a":tru}"#, #"{"a":"\x"}"#,
        "{\"a\":\"\u{01}\"}", #"{"a":1} x"#, #"{"a":1,"a":2}"#, #"{'a':1}"#, #"{"a":NaN}"#,
    ])
    func refusesMalformedDocuments(text: String) {
        #expect(throws: JSONScanner.Failure.self) { try members(text) }
    }

    @Test func refusesInvalidUTF8() {
        for bytes: [UInt8] in [
            [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D], [0x7B, 0x22, 0xC0, 0x80, 0x22, 0x3A, 0x31, 0x7D],
            [0x7B, 0x22, 0xED, 0xA0, 0x80, 0x22, 0x3A, 0x31, 0x7D],
        ] {
            #expect(throws: JSONScanner.Failure.self) { try JSONScanner.objectMembers(bytes) }
        }
    }

    @Test func limitsNestingAndNumberLength() throws {
        let deep = "{\"a\":" + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}"
        #expect(throws: JSONScanner.Failure.self) { try members(deep) }
        let fine = "{\"a\":" + String(repeating: "[", count: 60) + String(repeating: "]", count: 60) + "}"
        #expect(try members(fine).count == 1)
        #expect(throws: JSONScanner.Failure.self) { try members(#"{"a":1"# + String(repeating: "0", count: 100) + "}") }
    }

    @Test func requestBodyRewritesOnlyTheModel() throws {
        let body = try OpenAIRequestBody(bytes: Array(#"{"model":"alias","messages":[{"role":"user","content":"model"}],"stream":true}"#.utf8))
        #expect(body.model == "alias" && body.stream && !body.includeUsage)
        let forwarded = String(decoding: body.forwarding(model: "Qwen/Qwen2.5"), as: UTF8.self)
        #expect(forwarded == #"{"model":"Qwen/Qwen2.5","messages":[{"role":"user","content":"model"}],"stream":true}"#)
        let usage = String(decoding: body.forwarding(model: "alias", addIncludeUsage: true), as: UTF8.self)
        #expect(usage == #"{"model":"alias","messages":[{"role":"user","content":"model"}],"stream":true,"stream_options":{"include_usage":true}}"#)
    }

    @Test func requestBodyErrorsAreOpenAIErrors() {
        #expect(throws: GatewayError.self) { try OpenAIRequestBody(bytes: Array(#"{"model":5}"#.utf8)) }
        do {
            _ = try OpenAIRequestBody(bytes: Array("{nope".utf8))
        } catch let error as GatewayError {
            #expect(error.status == 400 && error.jsonBody.contains("invalid_json"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func arraysAreCountedWithoutDecoding() throws {
        let cases: [(String, Int?)] = [
            ("[]", 0), ("[ ]", 0), ("[1]", 1), (#"[1,"a,b",[2,3],{"k":[4,5]}]"#, 4), (#"["\"]\",",2]"#, 2), (#"[[],{}]"#, 2),
            (#"{"a":1}"#, nil), ("1", nil),
        ]
        for (json, expected) in cases {
            let document = Array(#"{"v":"#.utf8) + Array(json.utf8) + [UInt8(ascii: "}")]
            let member = try #require(try JSONScanner.objectMembers(document).first)
            #expect(document.withUnsafeBytes { JSONScanner.arrayCount($0, member.value) } == expected, "\(json)")
        }
    }
}
