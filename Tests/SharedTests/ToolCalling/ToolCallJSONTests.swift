import Foundation
import Testing

@testable import Shared

@Suite("Tool-call JSON helpers")
struct ToolCallJSONTests {
    /// Feeds `text` to the scanner; the byte offset just past the completed value, or `nil`.
    private static func scanEnd(_ text: String) -> Int?? {
        var scanner = ToolCallJSONScanner()
        for (offset, byte) in text.utf8.enumerated() {
            switch scanner.consume(byte) {
            case .incomplete: continue
            case .complete: return .some(offset + 1)
            case .invalid: return .some(nil)
            }
        }
        return nil
    }

    @Test(
        "the scanner finds where a container ends",
        arguments: [
            (#"{"a": [1, -2.5e+3, "x\"}", true, false, null]} tail"#, 46),
            (#"  []"#, 4),
            (#"{"nested": {"deep": [[{}]]}}"#, 28),
            ("{\"raw\": \"line\nbreak\"}", 21),
        ])
    func scannerCompletes(_ text: String, _ end: Int) {
        #expect(Self.scanEnd(text) == .some(end))
    }

    @Test(
        "the scanner rejects malformed prefixes at once",
        arguments: [
            "{a", "{\"a\" 1", "{\"a\": tru}", "[1,]", "[01]", "{\"a\": 1,}", "[1 2]", "{\"a\": -}", "[\"\\x\"]", "[1.]",
            "\"top-level string\"", "42", "{\"a\": 1]", "[\"\\u12g4\"]",
        ])
    func scannerRejects(_ text: String) {
        #expect(Self.scanEnd(text) == .some(nil))
    }

    @Test("nesting deeper than the limit is invalid")
    func depthLimit() {
        let deep = String(repeating: "[", count: ToolCallJSONScanner.maximumDepth + 1)
        #expect(Self.scanEnd(deep) == .some(nil))
        #expect(
            ToolCallJSONParser.parse(deep + String(repeating: "]", count: ToolCallJSONScanner.maximumDepth + 1)) == nil)
        let limit =
            String(repeating: "[", count: ToolCallJSONScanner.maximumDepth)
            + String(repeating: "]", count: ToolCallJSONScanner.maximumDepth)
        #expect(ToolCallJSONParser.parse(limit) != nil)
    }

    @Test("parse and serialise keep order and numbers, escape what JSON needs")
    func roundTrip() throws {
        let value = try #require(
            ToolCallJSONParser.parse(
                #" {"z": 1.50, "a": "\u00e9\ud83d\ude00\n\"/", "c": [true, null, {}], "raw": "tab\#t"} "#))
        #expect(value.serialized == #"{"z":1.50,"a":"é😀\n\"/","c":[true,null,{}],"raw":"tab\t"}"#)
        let controls = ToolCallJSONValue.string("\u{0}\u{1F}\u{7F}")
        #expect(controls.serialized == #""\u0000\u001f\#u{7F}""#)
        let decoded = try JSONSerialization.jsonObject(with: Data(value.serialized.utf8)) as? [String: Any]
        #expect(decoded?["a"] as? String == "é😀\n\"/")
    }

    @Test("lone surrogates decode to U+FFFD")
    func loneSurrogates() {
        #expect(ToolCallJSONParser.parse(#""\ud800x\udc00""#) == .string("\u{FFFD}x\u{FFFD}"))
    }

    @Test(
        "call objects decode only in the accepted shapes",
        arguments: [
            (#"{"name": "f", "arguments": {"a": 1}}"#, #"{"a":1}"#),
            (#"{"name": "f", "parameters": {"a": 1}}"#, #"{"a":1}"#),
            (#"{"name": "f", "arguments": null}"#, "{}"),
            (#"{"name": "f", "arguments": " {\"a\" : 1} "}"#, #"{"a":1}"#),
            (#"{"type": "function", "function": {"name": "f", "arguments": {}}}"#, "{}"),
            (#"{"name": "f", "arguments": [1]}"#, nil),
            (#"{"name": "f", "arguments": "not json"}"#, nil),
            (#"{"name": "f", "arguments": {}, "parameters": {}}"#, nil),
            (#"{"name": "f", "name": "g"}"#, nil),
            (#"{"name": 1}"#, nil),
            (#"[{"name": "f"}]"#, nil),
        ] as [(String, String?)])
    func decodeCall(_ text: String, _ arguments: String?) throws {
        let value = try #require(ToolCallJSONParser.parse(text))
        #expect(ToolCallObjectDecoder.decodeCall(value)?.arguments == arguments)
    }
}
