/// `usage` of an OpenAI response or stream chunk.
public struct TokenUsage: Sendable, Equatable {
    public var prompt: Int
    public var completion: Int
    public var total: Int { prompt + completion }

    public init(prompt: Int, completion: Int) {
        self.prompt = prompt
        self.completion = completion
    }

    /// The usage object in a JSON response or chunk, if any.
    public static func find(in json: [UInt8]) -> TokenUsage? {
        // Most stream chunks carry no usage: skip them without scanning.
        guard json.count > 8, contains(json, Array(#""usage""#.utf8)) else { return nil }
        return json.withUnsafeBytes { raw -> TokenUsage? in
            guard let members = try? JSONScanner.objectMembers(raw),
                let usage = members.first(where: { $0.key == "usage" }), raw[usage.value.lowerBound] == UInt8(ascii: "{"),
                let fields = try? JSONScanner.objectMembers(raw, range: usage.value)
            else { return nil }
            func number(_ key: String) -> Int {
                guard let member = fields.first(where: { $0.key == key }) else { return 0 }
                return Int(String(decoding: UnsafeRawBufferPointer(rebasing: raw[member.value]), as: UTF8.self)) ?? 0
            }
            return TokenUsage(prompt: number("prompt_tokens"), completion: number("completion_tokens"))
        }
    }

    /// True for the extra last chunk `include_usage` adds: `"choices": []` with a usage.
    public static func isUsageOnlyChunk(_ json: [UInt8]) -> Bool {
        guard contains(json, Array(#""usage""#.utf8)) else { return false }
        return json.withUnsafeBytes { raw in
            guard let members = try? JSONScanner.objectMembers(raw),
                let choices = members.first(where: { $0.key == "choices" })
            else { return false }
            let text = raw[choices.value].filter { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
            return text == [UInt8(ascii: "["), UInt8(ascii: "]")]
        }
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count, let first = needle.first else { return false }
        var i = 0
        let last = haystack.count - needle.count
        while i <= last {
            if haystack[i] == first && haystack[i..<(i + needle.count)].elementsEqual(needle) { return true }
            i += 1
        }
        return false
    }
}
