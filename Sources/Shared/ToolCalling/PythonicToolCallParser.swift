/// Pythonic syntax (Llama 3.2/4, ToolACE): `[get_weather(city="Paris"), get_time()]`.
///
/// The list is a call list only at the start of the output (after whitespace) or directly
/// after another list, and only when it is entirely calls with keyword arguments whose values
/// are Python literals (strings, numbers, `True`/`False`/`None`, lists, tuples, dicts with
/// string keys). Arguments become a JSON object in the order written. Anything else,
/// `[1, 2]` or `[see below]` included, is plain text.
struct PythonicToolCallParser: ScannedToolCallParser {
    /// `"pythonic"`.
    static let name = "pythonic"

    /// Where call ids come from.
    let idGenerator: ToolCallIDGenerator

    /// Creates a parser; ids are random unless a generator is given.
    init(idGenerator: ToolCallIDGenerator = .random) {
        self.idGenerator = idGenerator
    }
}

extension PythonicToolCallParser: ToolCallSyntax {
    func candidateStart(in bytes: ArraySlice<UInt8>, context: ToolCallScanContext) -> Int? {
        guard context.isAtStartOfOutput || context.followsToolCall,
            let first = ToolCallBytes.firstNonWhitespace(in: bytes), bytes[first] == UInt8(ascii: "[")
        else { return nil }
        return first
    }

    func makeMatcher(context: ToolCallScanContext) -> Matcher {
        Matcher()
    }

    /// Checks `[` ws* name ws* `(` at once, then finds the closing `]` with a bracket and
    /// string aware scanner, and parses the whole list.
    struct Matcher: ToolCallMatcher {
        private enum Phase: Sendable {
            case start
            case beforeName
            case name(length: Int)
            case afterName
            case body(ToolCallPythonScanner)
        }

        private var phase = Phase.start
        private var bytes: [UInt8] = []

        mutating func consume(_ byte: UInt8) -> ToolCallMatchStep {
            bytes.append(byte)
            let isSpace = ToolCallBytes.isWhitespace(byte)
            switch phase {
            case .start:
                phase = .beforeName
            case .beforeName:
                if isSpace { return .undecided }
                guard ToolCallBytes.isNameByte(byte) else { return .rejected }
                phase = .name(length: 1)
            case .name(let length):
                if ToolCallBytes.isNameByte(byte) {
                    guard length < ToolFunctionName.maximumLength else { return .rejected }
                    phase = .name(length: length + 1)
                    return .undecided
                }
                return afterName(byte)
            case .afterName:
                return afterName(byte)
            case .body(var scanner):
                switch scanner.consume(byte) {
                case .incomplete:
                    phase = .body(scanner)
                case .invalid:
                    return .rejected
                case .complete:
                    return ToolCallPythonParser.parseCallList(bytes).map(ToolCallMatchStep.accepted) ?? .rejected
                }
            }
            return .undecided
        }

        private mutating func afterName(_ byte: UInt8) -> ToolCallMatchStep {
            if ToolCallBytes.isWhitespace(byte) {
                phase = .afterName
                return .undecided
            }
            guard byte == UInt8(ascii: "(") else { return .rejected }
            phase = .body(ToolCallPythonScanner())
            return .undecided
        }

        mutating func finish() -> ToolCallMatchStep {
            .rejected
        }
    }
}
