import Testing

@testable import Shared

/// Finding `usage` in an upstream's answer: only the top-level member counts, whatever
/// the members before it hold.
@Suite struct TokenUsageTests {
    func find(_ text: String) -> TokenUsage? { TokenUsage.find(in: Array(text.utf8)) }

    @Test func theTopLevelUsageOfACompletion() {
        let body =
            #"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"#
            + #""finish_reason":"stop"}],"usage":{"prompt_tokens":7,"total_tokens":10,"completion_tokens":3}}"#
        #expect(find(body) == TokenUsage(prompt: 7, completion: 3))
    }

    @Test func detailsInsideTheUsageAreSkippedAndOddCountsAreZero() {
        let details = #"{"usage":{"prompt_tokens":2,"prompt_tokens_details":{"cached_tokens":9},"completion_tokens":5}}"#
        #expect(find(details) == TokenUsage(prompt: 2, completion: 5))
        #expect(find(#"{"usage":{"prompt_tokens":-3,"completion_tokens":"7"}}"#) == TokenUsage(prompt: 0, completion: 0))
        #expect(find(#"{"usage":{"prompt_tokens":1.5,"completion_tokens":99999999999999999999}}"#) == TokenUsage(prompt: 0, completion: 0))
        #expect(find(#"{"usage":{}}"#) == TokenUsage(prompt: 0, completion: 0))
    }

    @Test func whitespaceAndMemberOrderDoNotMatter() {
        let body = "{\n  \"usage\" : { \"completion_tokens\" : 5 , \"prompt_tokens\": 2 } ,\n  \"id\": \"x\"\n}\n"
        #expect(find(body) == TokenUsage(prompt: 2, completion: 5))
    }

    @Test func aUsageInsideAnotherMemberIsNotTheAnswersUsage() {
        // A nested object named usage, strings with escaped quotes and brackets, and text
        // that spells the key: none of them is the top-level member.
        let nested =
            #"{"choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 99} ]}"},"#
            + #""usage":{"prompt_tokens":50,"completion_tokens":50}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#
        #expect(find(nested) == TokenUsage(prompt: 1, completion: 2))
        let onlyNested = #"{"choices":[{"usage":{"prompt_tokens":50,"completion_tokens":50}}],"id":"x"}"#
        #expect(find(onlyNested) == nil)
    }

    @Test func noUsageANullUsageOrACutDocumentGiveNothing() {
        #expect(find(#"{"id":"x","choices":[]}"#) == nil)
        #expect(find(#"{"id":"x","usage":null}"#) == nil)
        #expect(find(#"{"id":"x","choices":[{"text":"a\"b"#) == nil)
        #expect(find(#"{"id":"x","choices":[{"text":"unterminated"#) == nil)
        #expect(find(#"{"id":"x","usage":{"prompt_tokens":1,"#) == nil)
        #expect(find(#"["usage",{"usage":{"prompt_tokens":1}}]"#) == nil, "not an object")
    }

    /// The search finds what a plain search finds, at every offset, for
    /// needles shorter and longer than a word, planted whole or all but their last byte.
    @Test func theSearchAgreesWithAPlainOne() {
        var random = SplitMix64(seed: 7)
        let alphabet = Array(#""usage:{}u"#.utf8)
        for needle in [#""usage""#, "us", "usag", #""completion_tokens""#].map({ Array($0.utf8) }) {
            for length in 0..<40 {
                for _ in 0..<50 {
                    var haystack = (0..<length).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] }
                    if length >= needle.count, random.next() % 2 == 0 {
                        // Planted at a random offset, or all but its last byte (a near miss).
                        let at = Int(random.next() % UInt64(length - needle.count + 1))
                        let planted = random.next() % 2 == 0 ? needle[...] : needle.dropLast()
                        haystack.replaceSubrange(at..<(at + planted.count), with: planted)
                    }
                    let plain =
                        haystack.count >= needle.count
                        && (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<($0 + needle.count)]) == needle }
                    #expect(TokenUsage.contains(haystack, needle) == plain, "\(String(decoding: haystack, as: UTF8.self))")
                }
            }
            #expect(TokenUsage.contains(Array("xx".utf8) + needle, needle))
            #expect(!TokenUsage.contains(Array(needle.dropLast()) + [UInt8(ascii: "x")], needle))
        }
    }

    /// Strings holding runs of backslashes before quotes, and text that spells a usage
    /// member: the usage found is the top-level one, as a validating scanner sees it.
    @Test func escapedQuotesAndBackslashRunsAreSkippedLikeAValidatingScannerSkipsThem() throws {
        var random = SplitMix64(seed: 11)
        // JSON string content: escaped backslashes and quotes in runs, text, and an escaped
        // copy of a usage member.
        let pieces = [#"\\"#, #"\""#, #"\\\""#, #"\\\\"#, "a", " ", "é", "{", "]", #"\"usage\":{\"prompt_tokens\":99}"#, #"\n"#]
        for _ in 0..<2000 {
            let text = (0..<Int(random.next() % 12)).map { _ in pieces[Int(random.next() % UInt64(pieces.count))] }.joined()
            let prompt = Int(random.next() % 1000)
            let completion = Int(random.next() % 1000)
            let body =
                #"{"choices":[{"message":{"content":""# + text + #""},"finish_reason":"stop"}],"#
                + #""note":""# + text + #"","usage":{"prompt_tokens":\#(prompt),"completion_tokens":\#(completion)}}"#
            let bytes = Array(body.utf8)
            // The document is valid JSON, and its one top-level usage is the last member.
            let members = try bytes.withUnsafeBytes { try JSONScanner.objectMembers($0) }
            #expect(members.map(\.key) == ["choices", "note", "usage"], "\(body)")
            #expect(TokenUsage.find(in: bytes) == TokenUsage(prompt: prompt, completion: completion), "\(body)")
            // Cut before its usage member, the document has none.
            let cut = Array(bytes[..<(bytes.count - 60 - Int(random.next() % 20))])
            #expect(TokenUsage.find(in: cut) == nil, "\(String(decoding: cut, as: UTF8.self))")
        }
    }

    /// Counts past any model's context are clamped (and the caller logs them).
    @Test func implausibleCountsAreClamped() {
        let (usage, clamped) = TokenUsage(prompt: 999_999_999_999_999_999, completion: 3).clamped
        #expect(clamped)
        #expect(usage == TokenUsage(prompt: TokenUsage.plausibleMaximum, completion: 3))
        #expect(TokenUsage(prompt: 10, completion: 20).clamped == (TokenUsage(prompt: 10, completion: 20), false))
        let found = TokenUsage.find(in: Array(#"{"usage":{"prompt_tokens":999999999999999999,"completion_tokens":18446744073709551615}}"#.utf8))
        #expect(found == TokenUsage(prompt: 999_999_999_999_999_999, completion: 0), "20 digits is not a count")
        #expect(found!.total > 0, "the sum of two 18-digit counts does not overflow")
    }
}
