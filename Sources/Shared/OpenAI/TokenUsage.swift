import CGatewayShims

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// `usage` of an OpenAI response or stream chunk.
public struct TokenUsage: Sendable, Equatable {
    public var prompt: Int
    public var completion: Int
    public var total: Int { prompt + completion }

    /// More tokens than any model's context holds in one answer (16 Mi): a count above it
    /// is an upstream's bug or attack, and is charged and counted as this much.
    public static let plausibleMaximum = 1 << 24

    /// This usage with each count at most ``plausibleMaximum``, and whether one was above it.
    public var clamped: (usage: TokenUsage, wasClamped: Bool) {
        let limit = Self.plausibleMaximum
        let usage = TokenUsage(prompt: min(prompt, limit), completion: min(completion, limit))
        return (usage, usage != self)
    }

    public init(prompt: Int, completion: Int) {
        self.prompt = prompt
        self.completion = completion
    }

    /// Where an API family reports usage: the top-level `usage` object (else the one in the
    /// top-level `container` object) and its two counts, keys with their quotes.
    public struct Keys: Sendable, Equatable {
        let prompt: [UInt8]
        let completion: [UInt8]
        var container: [UInt8]? = nil

        /// ``inputOutput``, also looked for in the top-level object `container` (a stream
        /// event's `response` or `message`).
        public static func inputOutput(in container: String) -> Keys {
            Keys(prompt: inputOutput.prompt, completion: inputOutput.completion, container: Array("\"\(container)\"".utf8))
        }

        /// `usage.prompt_tokens` / `usage.completion_tokens` (OpenAI's chat, completions, embeddings).
        public static let openAI = Keys(prompt: Array(#""prompt_tokens""#.utf8), completion: Array(#""completion_tokens""#.utf8))
        /// `usage.input_tokens` / `usage.output_tokens` (Anthropic Messages, OpenAI Responses).
        public static let inputOutput = Keys(prompt: Array(#""input_tokens""#.utf8), completion: Array(#""output_tokens""#.utf8))
    }

    /// The usage object in a JSON response or chunk, if any.
    public static func find(in json: [UInt8], keys: Keys = .openAI) -> TokenUsage? {
        json.withUnsafeBytes { find(in: $0, keys: keys) }
    }

    /// The top-level `usage` object of the JSON object in `raw`, if any. The document is an
    /// upstream's answer and is not validated: members are skipped by their brackets and
    /// strings, and a count that is not a plain non-negative integer counts as 0.
    public static func find(in raw: UnsafeRawBufferPointer, keys: Keys = .openAI) -> TokenUsage? {
        // Most stream chunks carry no usage: skip them without scanning.
        guard raw.count > 8, mentionsUsage(raw) else { return nil }
        var found = topLevelValue(of: usageKey, in: raw)
        if found.map({ raw[$0.lowerBound] != UInt8(ascii: "{") }) ?? true, let container = keys.container,
            let outer = topLevelValue(of: container, in: raw), raw[outer.lowerBound] == UInt8(ascii: "{"),
            let inner = topLevelValue(of: usageKey, in: UnsafeRawBufferPointer(rebasing: raw[outer]))
        {
            found = (inner.lowerBound + outer.lowerBound)..<(inner.upperBound + outer.lowerBound)
        }
        guard let value = found, raw[value.lowerBound] == UInt8(ascii: "{") else { return nil }
        let usage = UnsafeRawBufferPointer(rebasing: raw[value])
        func count(_ key: [UInt8]) -> Int {
            guard let range = topLevelValue(of: key, in: usage), (1...18).contains(range.count) else { return 0 }
            var n = 0
            for byte in usage[range] {
                guard byte >= 0x30 && byte <= 0x39 else { return 0 }
                n = n * 10 + Int(byte - 0x30)
            }
            return n
        }
        return TokenUsage(prompt: count(keys.prompt), completion: count(keys.completion))
    }

    /// Whether `"usage"` (quotes included) occurs anywhere in `raw`: a quick test before
    /// any parsing, for answers and for each read of a stream.
    public static func mentionsUsage(_ raw: UnsafeRawBufferPointer) -> Bool { contains(raw, usageKey) }

    /// `"usage"`, quotes included.
    static let usageKey: [UInt8] = Array(#""usage""#.utf8)

    /// The byte range of the value of the top-level member whose key is `quotedKey` (quotes
    /// included, no escapes), or nil when there is none or the object is cut short.
    static func topLevelValue(of quotedKey: [UInt8], in raw: UnsafeRawBufferPointer) -> Range<Int>? {
        let end = raw.count
        var i = 0
        func skipWhitespace() {
            while i < end, raw[i] == 0x20 || raw[i] == 0x0A || raw[i] == 0x0D || raw[i] == 0x09 { i += 1 }
        }
        /// From an opening quote to just past the closing one: `memchr` finds each quote
        /// (answers are mostly text), and a quote after an odd run of backslashes is
        /// escaped. The run stops at the opening quote at the latest.
        func skipString() -> Bool {
            guard let base = raw.baseAddress else { return false }
            i += 1
            while i < end {
                guard let found = memchr(base + i, Int32(UInt8(ascii: "\"")), end - i) else {
                    i = end
                    return false
                }
                let quote = base.distance(to: UnsafeRawPointer(found))
                var backslashes = 0
                while raw[quote - 1 - backslashes] == UInt8(ascii: "\\") { backslashes += 1 }
                i = quote + 1
                if backslashes % 2 == 0 { return true }
            }
            return false
        }
        /// One value: a string, a bracketed value (strings inside skipped), or a literal.
        func skipValue() -> Bool {
            guard i < end else { return false }
            switch raw[i] {
            case UInt8(ascii: "\""):
                return skipString()
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                var depth = 0
                while i < end {
                    switch raw[i] {
                    case UInt8(ascii: "\""):
                        guard skipString() else { return false }
                        continue
                    case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                    case UInt8(ascii: "}"), UInt8(ascii: "]"):
                        depth -= 1
                        if depth == 0 {
                            i += 1
                            return true
                        }
                    default: break
                    }
                    i += 1
                }
                return false
            default:
                while i < end, raw[i] != UInt8(ascii: ","), raw[i] != UInt8(ascii: "}"), raw[i] != UInt8(ascii: "]") { i += 1 }
                return i < end
            }
        }
        skipWhitespace()
        guard i < end, raw[i] == UInt8(ascii: "{") else { return nil }
        i += 1
        while true {
            skipWhitespace()
            guard i < end, raw[i] == UInt8(ascii: "\"") else { return nil }
            let keyStart = i
            guard skipString() else { return nil }
            let isKey = i - keyStart == quotedKey.count && zip(raw[keyStart..<i], quotedKey).allSatisfy { $0 == $1 }
            skipWhitespace()
            guard i < end, raw[i] == UInt8(ascii: ":") else { return nil }
            i += 1
            skipWhitespace()
            let valueStart = i
            guard skipValue() else { return nil }
            if isKey {
                var valueEnd = i
                while valueEnd > valueStart, raw[valueEnd - 1] == 0x20 || raw[valueEnd - 1] == 0x0A || raw[valueEnd - 1] == 0x0D || raw[valueEnd - 1] == 0x09 {
                    valueEnd -= 1
                }
                return valueStart..<valueEnd
            }
            skipWhitespace()
            guard i < end, raw[i] == UInt8(ascii: ",") else { return nil }
            i += 1
        }
    }

    /// True for the extra last chunk `include_usage` adds: `"choices": []` with a usage.
    public static func isUsageOnlyChunk(_ json: [UInt8]) -> Bool {
        guard contains(json, usageKey) else { return false }
        return json.withUnsafeBytes { raw in
            guard let members = try? JSONScanner.objectMembers(raw),
                let choices = members.first(where: { $0.key == "choices" })
            else { return false }
            let text = raw[choices.value].filter { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
            return text == [UInt8(ascii: "["), UInt8(ascii: "]")]
        }
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        haystack.withUnsafeBytes { contains($0, needle) }
    }

    /// Whether `needle` occurs in `haystack` (glibc's `memmem`). It runs over every non-streamed
    /// answer and every read of a stream.
    static func contains(_ haystack: UnsafeRawBufferPointer, _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count, let base = haystack.baseAddress else { return false }
        return needle.withUnsafeBytes { needle in gw_memmem(base, haystack.count, needle.baseAddress, needle.count) != nil }
    }
}
