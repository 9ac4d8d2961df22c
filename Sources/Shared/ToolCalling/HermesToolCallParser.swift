/// Hermes / Qwen syntax: `<tool_call>{"name": "f", "arguments": {…}}</tool_call>`.
///
/// Calls may appear anywhere in the text, any number of times. Whitespace is allowed inside
/// the tags around the JSON. A call whose closing tag is missing (or cut short) at the very
/// end of the text is still a call, as vLLM treats it. Anything else inside the tags (broken
/// JSON, a second object, not a call object) leaves the whole marker as plain text.
struct HermesToolCallParser: ScannedToolCallParser {
    /// `"hermes"`.
    static let name = "hermes"

    /// Where call ids come from.
    let idGenerator: ToolCallIDGenerator

    /// Creates a parser; ids are random unless a generator is given.
    init(idGenerator: ToolCallIDGenerator = .random) {
        self.idGenerator = idGenerator
    }
}

extension HermesToolCallParser: ToolCallSyntax {
    func candidateStart(in bytes: ArraySlice<UInt8>, context: ToolCallScanContext) -> Int? {
        bytes.firstIndex(of: UInt8(ascii: "<"))
    }

    func makeMatcher(context: ToolCallScanContext) -> Matcher {
        Matcher()
    }

    /// Matches `<tool_call>` ws* object ws* (`</tool_call>` | end of text).
    struct Matcher: ToolCallMatcher {
        private enum Phase: Sendable {
            case openTag(ToolCallLiteralMatcher)
            case beforeObject
            case object(ToolCallJSONScanner)
            case afterObject
            case closeTag(ToolCallLiteralMatcher)
        }

        private var phase = Phase.openTag(ToolCallLiteralMatcher("<tool_call>"))
        private var objectBytes: [UInt8] = []
        private var call: ExtractedToolCall?

        mutating func consume(_ byte: UInt8) -> ToolCallMatchStep {
            switch phase {
            case .openTag(var tag):
                switch tag.consume(byte) {
                case .partial: phase = .openTag(tag)
                case .complete: phase = .beforeObject
                case .mismatch: return .rejected
                }
            case .beforeObject:
                if ToolCallBytes.isWhitespace(byte) { return .undecided }
                guard byte == UInt8(ascii: "{") else { return .rejected }
                phase = .object(ToolCallJSONScanner())
                return consume(byte)
            case .object(var scanner):
                objectBytes.append(byte)
                switch scanner.consume(byte) {
                case .incomplete:
                    phase = .object(scanner)
                case .invalid:
                    return .rejected
                case .complete:
                    guard let object = ToolCallJSONParser.parse(objectBytes),
                        let call = ToolCallObjectDecoder.decodeCall(object)
                    else { return .rejected }
                    self.call = call
                    phase = .afterObject
                }
            case .afterObject:
                if ToolCallBytes.isWhitespace(byte) { return .undecided }
                guard byte == UInt8(ascii: "<") else { return .rejected }
                phase = .closeTag(ToolCallLiteralMatcher("</tool_call>"))
                return consume(byte)
            case .closeTag(var tag):
                switch tag.consume(byte) {
                case .partial: phase = .closeTag(tag)
                case .complete: return call.map { .accepted([$0]) } ?? .rejected
                case .mismatch: return .rejected
                }
            }
            return .undecided
        }

        mutating func finish() -> ToolCallMatchStep {
            switch phase {
            case .afterObject, .closeTag: return call.map { .accepted([$0]) } ?? .rejected
            default: return .rejected
            }
        }
    }
}
