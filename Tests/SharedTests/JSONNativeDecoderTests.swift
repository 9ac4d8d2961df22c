import Foundation
import Testing

@testable import Shared

/// The tool pre-flight's decoder: the same values as Foundation's for validated JSON, and
/// containers past the depth asked for are not built (issue 20, finding 1).
@Suite struct JSONNativeDecoderTests {
    func decode(_ json: String, containerDepth: Int = .max) throws -> Any? {
        let document = Array(#"{"v":"#.utf8) + Array(json.utf8) + [UInt8(ascii: "}")]
        let member = try #require(try JSONScanner.objectMembers(document).first)
        return document.withUnsafeBytes { JSONNativeDecoder.decode($0, member.value, containerDepth: containerDepth) }
    }

    @Test(arguments: [
        #"{"a":[1,-2.5e3,true,false,null,"x\"\\\u00e9\ud83d\ude00"],"b":{},"c":[],"d":{"e":{"f":[{}]}}}"#,
        #"[ 0 , 1.5 , "" , [ [ ] ] , { "k" : "v" } ]"#, #""just a string""#, "123", "null",
    ])
    func decodesAsFoundationDoes(json: String) throws {
        let ours = try decode(json)
        let theirs = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed])
        #expect(NSDictionary(dictionary: ["v": ours as Any]).isEqual(to: ["v": theirs]), "\(json)")
    }

    @Test func containersPastTheDepthAreEmptyPlaceholders() throws {
        let value = try #require(try decode(#"{"a":{"b":{"c":1}},"l":[[1,2],"s"],"n":3}"#, containerDepth: 1) as? [String: Any])
        #expect((value["a"] as? [String: Any])?["b"].map { ($0 as? [String: Any])?.isEmpty } == true)
        #expect(((value["l"] as? [Any])?.first as? [Any])?.isEmpty == true)
        #expect((value["l"] as? [Any])?.last as? String == "s")
        #expect(value["n"] as? Int == 3)
    }
}
