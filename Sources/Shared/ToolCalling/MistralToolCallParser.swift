/// Mistral syntax: `[TOOL_CALLS][{"name": "f", "arguments": {…}}, …]`.
///
/// Also accepted after `[TOOL_CALLS]`: a single object, and the newer tokenizer's
/// `name[ARGS]{…}` form (one call per `[TOOL_CALLS]`). `[TOOL_CALLS]` opens calls anywhere.
/// Because vLLM drops special tokens from text unless asked not to, a bare array of call
/// objects at the very start of the output is recognised as well.
struct MistralToolCallParser: ScannedToolCallParser {
    /// `"mistral"`.
    static let name = "mistral"

    /// Where call ids come from.
    let idGenerator: ToolCallIDGenerator

    /// Creates a parser; ids are random unless a generator is given.
    init(idGenerator: ToolCallIDGenerator = .random) {
        self.idGenerator = idGenerator
    }
}

extension MistralToolCallParser: ToolCallSyntax {
    func candidateStart(in bytes: ArraySlice<UInt8>, context: ToolCallScanContext) -> Int? {
        bytes.firstIndex(of: UInt8(ascii: "["))
    }

    func makeMatcher(context: ToolCallScanContext) -> Matcher {
        Matcher(allowsBareArray: context.isAtStartOfOutput)
    }

    /// Matches `[TOOL_CALLS]` ws* (array | object | name `[ARGS]` ws* object), or a bare
    /// array whose first element is an object.
    struct Matcher: ToolCallMatcher {
        private enum Phase: Sendable {
            case start
            case afterBracket
            case marker(ToolCallLiteralMatcher)
            case bareArray(ToolCallJSONScanner)
            case afterMarker
            case json(ToolCallJSONScanner)
            case name
            case argumentsTag(ToolCallLiteralMatcher)
            case beforeArguments
            case arguments(ToolCallJSONScanner)
        }

        private let allowsBareArray: Bool
        private var phase = Phase.start
        private var jsonBytes: [UInt8] = []
        private var name: [UInt8] = []

        init(allowsBareArray: Bool) {
            self.allowsBareArray = allowsBareArray
        }

        mutating func consume(_ byte: UInt8) -> ToolCallMatchStep {
            let isSpace = ToolCallBytes.isWhitespace(byte)
            switch phase {
            case .start:
                phase = .afterBracket
            case .afterBracket:
                if byte == UInt8(ascii: "T") {
                    phase = .marker(ToolCallLiteralMatcher("TOOL_CALLS]"))
                    return consume(byte)
                }
                guard allowsBareArray, isSpace || byte == UInt8(ascii: "{") else { return .rejected }
                var scanner = ToolCallJSONScanner()
                _ = scanner.consume(UInt8(ascii: "["))
                jsonBytes = [UInt8(ascii: "[")]
                phase = isSpace ? .bareArray(scanner) : .json(scanner)
                return consume(byte)
            case .bareArray(var scanner):
                guard isSpace || byte == UInt8(ascii: "{") else { return .rejected }
                jsonBytes.append(byte)
                _ = scanner.consume(byte)
                phase = isSpace ? .bareArray(scanner) : .json(scanner)
            case .marker(var marker):
                switch marker.consume(byte) {
                case .partial: phase = .marker(marker)
                case .complete: phase = .afterMarker
                case .mismatch: return .rejected
                }
            case .afterMarker:
                if isSpace { return .undecided }
                if byte == UInt8(ascii: "[") || byte == UInt8(ascii: "{") {
                    phase = .json(ToolCallJSONScanner())
                    return consume(byte)
                }
                guard ToolCallBytes.isNameByte(byte) else { return .rejected }
                phase = .name
                return consume(byte)
            case .json(var scanner):
                jsonBytes.append(byte)
                switch scanner.consume(byte) {
                case .incomplete: phase = .json(scanner)
                case .invalid: return .rejected
                case .complete: return Self.accept(ToolCallJSONParser.parse(jsonBytes).flatMap(Self.decodeCalls))
                }
            case .name:
                if byte == UInt8(ascii: "[") {
                    phase = .argumentsTag(ToolCallLiteralMatcher("[ARGS]"))
                    return consume(byte)
                }
                guard ToolCallBytes.isNameByte(byte), name.count < ToolFunctionName.maximumLength else {
                    return .rejected
                }
                name.append(byte)
            case .argumentsTag(var tag):
                switch tag.consume(byte) {
                case .partial: phase = .argumentsTag(tag)
                case .complete: phase = .beforeArguments
                case .mismatch: return .rejected
                }
            case .beforeArguments:
                if isSpace { return .undecided }
                guard byte == UInt8(ascii: "{") else { return .rejected }
                phase = .arguments(ToolCallJSONScanner())
                return consume(byte)
            case .arguments(var scanner):
                jsonBytes.append(byte)
                switch scanner.consume(byte) {
                case .incomplete: phase = .arguments(scanner)
                case .invalid: return .rejected
                case .complete:
                    let arguments = ToolCallJSONParser.parse(jsonBytes).flatMap(ToolCallObjectDecoder.decodeArguments)
                    let name = String(decoding: name, as: UTF8.self)
                    return Self.accept(arguments.map { [ExtractedToolCall(name: name, arguments: $0)] })
                }
            }
            return .undecided
        }

        mutating func finish() -> ToolCallMatchStep {
            .rejected
        }

        private static func decodeCalls(_ value: ToolCallJSONValue) -> [ExtractedToolCall]? {
            if case .array = value { return ToolCallObjectDecoder.decodeCallList(value) }
            return ToolCallObjectDecoder.decodeCall(value).map { [$0] }
        }

        private static func accept(_ calls: [ExtractedToolCall]?) -> ToolCallMatchStep {
            calls.map(ToolCallMatchStep.accepted) ?? .rejected
        }
    }
}
