/// Llama 3.x JSON syntax: `{"name": "f", "parameters": {…}}`, optionally preceded by
/// `<|python_tag|>`, several calls separated by `;` (or just whitespace).
///
/// A bare JSON object is a call only at the start of the output (after whitespace) or
/// directly after another call, so JSON quoted inside prose stays prose; `<|python_tag|>`
/// opens a call anywhere. An object that is not a call (a JSON answer, say) is plain text.
struct Llama3JSONToolCallParser: ScannedToolCallParser {
    /// `"llama3_json"`.
    static let name = "llama3_json"

    /// Where call ids come from.
    let idGenerator: ToolCallIDGenerator

    /// Creates a parser; ids are random unless a generator is given.
    init(idGenerator: ToolCallIDGenerator = .random) {
        self.idGenerator = idGenerator
    }
}

extension Llama3JSONToolCallParser: ToolCallSyntax {
    func candidateStart(in bytes: ArraySlice<UInt8>, context: ToolCallScanContext) -> Int? {
        if context.isAtStartOfOutput || context.followsToolCall, let first = ToolCallBytes.firstNonWhitespace(in: bytes) {
            let byte = bytes[first]
            if byte == UInt8(ascii: "{") || (byte == UInt8(ascii: ";") && context.followsToolCall) { return first }
        }
        return bytes.firstIndex(of: UInt8(ascii: "<"))
    }

    func makeMatcher(context: ToolCallScanContext) -> Matcher {
        Matcher()
    }

    /// Matches (`<|python_tag|>` | `;`)? ws* object.
    struct Matcher: ToolCallMatcher {
        private enum Phase: Sendable {
            case start
            case tag(ToolCallLiteralMatcher)
            case beforeObject
            case object(ToolCallJSONScanner)
        }

        private var phase = Phase.start
        private var objectBytes: [UInt8] = []

        mutating func consume(_ byte: UInt8) -> ToolCallMatchStep {
            switch phase {
            case .start:
                switch byte {
                case UInt8(ascii: "<"):
                    phase = .tag(ToolCallLiteralMatcher("<|python_tag|>"))
                case UInt8(ascii: ";"):
                    phase = .beforeObject
                    return .undecided
                default:
                    phase = .beforeObject
                }
                return consume(byte)
            case .tag(var tag):
                switch tag.consume(byte) {
                case .partial: phase = .tag(tag)
                case .complete: phase = .beforeObject
                case .mismatch: return .rejected
                }
                return .undecided
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
                    return .undecided
                case .invalid:
                    return .rejected
                case .complete:
                    guard let object = ToolCallJSONParser.parse(objectBytes),
                        let call = ToolCallObjectDecoder.decodeCall(object)
                    else { return .rejected }
                    return .accepted([call])
                }
            }
        }

        mutating func finish() -> ToolCallMatchStep {
            .rejected
        }
    }
}
