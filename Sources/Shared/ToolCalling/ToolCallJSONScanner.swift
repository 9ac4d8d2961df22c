/// Validates one JSON object or array incrementally and reports the byte that closes it.
///
/// This is the object-boundary scanner behind the JSON-based families: it needs no
/// lookahead (the top level is always a container) and rejects a malformed prefix as soon as
/// it is malformed, so text that only looks like JSON is released early. It accepts raw
/// control characters inside strings, which models emit and which the re-serialisation of
/// ``ToolCallJSONValue`` escapes. Nesting deeper than ``maximumDepth`` is invalid.
struct ToolCallJSONScanner: Sendable, Hashable {
    /// The scan's state after a byte.
    enum Progress: Sendable, Hashable {
        /// A valid prefix; more bytes are needed.
        case incomplete
        /// This byte closed the top-level value.
        case complete
        /// The bytes are not a JSON container, whatever follows.
        case invalid
    }

    /// The deepest nesting accepted.
    static let maximumDepth = 64

    private enum NumberPhase: Sendable, Hashable {
        case minus, zero, integer, dot, fraction, exponentMark, exponentSign, exponent

        var isTerminal: Bool {
            self == .zero || self == .integer || self == .fraction || self == .exponent
        }
    }

    private enum State: Sendable, Hashable {
        case start
        case keyOrClose
        case key
        case colon
        case valueOrClose
        case value
        case afterValue
        case string(isKey: Bool)
        case escape(isKey: Bool)
        case unicode(isKey: Bool, remaining: Int)
        case number(NumberPhase)
        case literal(word: Int, matched: Int)
        case done
        case failed
    }

    private static let words: [[UInt8]] = [Array("true".utf8), Array("false".utf8), Array("null".utf8)]

    private var isObject: [Bool] = []
    private var state = State.start

    /// Reads the next byte.
    mutating func consume(_ byte: UInt8) -> Progress {
        let progress = step(byte)
        if progress == .invalid { state = .failed }
        return progress
    }

    private mutating func step(_ byte: UInt8) -> Progress {
        let isSpace = ToolCallBytes.isWhitespace(byte)
        switch state {
        case .done, .failed:
            return .invalid
        case .start:
            if isSpace { return .incomplete }
            guard byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") else { return .invalid }
            return beginValue(byte)
        case .keyOrClose, .key:
            if isSpace { return .incomplete }
            if byte == UInt8(ascii: "\"") {
                state = .string(isKey: true)
                return .incomplete
            }
            return state == .keyOrClose && byte == UInt8(ascii: "}") ? close() : .invalid
        case .colon:
            if isSpace { return .incomplete }
            guard byte == UInt8(ascii: ":") else { return .invalid }
            state = .value
            return .incomplete
        case .valueOrClose, .value:
            if isSpace { return .incomplete }
            if state == .valueOrClose, byte == UInt8(ascii: "]") { return close() }
            return beginValue(byte)
        case .afterValue:
            if isSpace { return .incomplete }
            let inObject = isObject.last ?? false
            switch byte {
            case UInt8(ascii: ","):
                state = inObject ? .key : .value
                return .incomplete
            case UInt8(ascii: "}") where inObject, UInt8(ascii: "]") where !inObject:
                return close()
            default:
                return .invalid
            }
        case .string(let isKey):
            if byte == UInt8(ascii: "\"") {
                state = isKey ? .colon : .afterValue
            } else if byte == UInt8(ascii: "\\") {
                state = .escape(isKey: isKey)
            }
            return .incomplete
        case .escape(let isKey):
            switch byte {
            case UInt8(ascii: "u"):
                state = .unicode(isKey: isKey, remaining: 4)
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                state = .string(isKey: isKey)
            default:
                return .invalid
            }
            return .incomplete
        case .unicode(let isKey, let remaining):
            guard ToolCallBytes.isHexDigit(byte) else { return .invalid }
            state = remaining == 1 ? .string(isKey: isKey) : .unicode(isKey: isKey, remaining: remaining - 1)
            return .incomplete
        case .number(let phase):
            return continueNumber(phase, with: byte)
        case .literal(let word, let matched):
            let letters = Self.words[word]
            guard letters[matched] == byte else { return .invalid }
            state = matched + 1 == letters.count ? .afterValue : .literal(word: word, matched: matched + 1)
            return .incomplete
        }
    }

    private mutating func beginValue(_ byte: UInt8) -> Progress {
        switch byte {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            guard isObject.count < Self.maximumDepth else { return .invalid }
            let opensObject = byte == UInt8(ascii: "{")
            isObject.append(opensObject)
            state = opensObject ? .keyOrClose : .valueOrClose
        case UInt8(ascii: "\""):
            state = .string(isKey: false)
        case UInt8(ascii: "-"):
            state = .number(.minus)
        case UInt8(ascii: "0"):
            state = .number(.zero)
        case _ where ToolCallBytes.isDigit(byte):
            state = .number(.integer)
        case UInt8(ascii: "t"):
            state = .literal(word: 0, matched: 1)
        case UInt8(ascii: "f"):
            state = .literal(word: 1, matched: 1)
        case UInt8(ascii: "n"):
            state = .literal(word: 2, matched: 1)
        default:
            return .invalid
        }
        return .incomplete
    }

    private mutating func close() -> Progress {
        isObject.removeLast()
        if isObject.isEmpty {
            state = .done
            return .complete
        }
        state = .afterValue
        return .incomplete
    }

    private mutating func continueNumber(_ phase: NumberPhase, with byte: UInt8) -> Progress {
        let isDigit = ToolCallBytes.isDigit(byte)
        let next: NumberPhase?
        switch phase {
        case .minus: next = byte == UInt8(ascii: "0") ? .zero : (isDigit ? .integer : nil)
        case .zero, .integer:
            if isDigit {
                next = phase == .integer ? .integer : nil
            } else if byte == UInt8(ascii: ".") {
                next = .dot
            } else {
                next = byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") ? .exponentMark : nil
            }
        case .dot: next = isDigit ? .fraction : nil
        case .fraction:
            next = isDigit ? .fraction : (byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") ? .exponentMark : nil)
        case .exponentMark:
            next = isDigit ? .exponent : (byte == UInt8(ascii: "+") || byte == UInt8(ascii: "-") ? .exponentSign : nil)
        case .exponentSign, .exponent: next = isDigit ? .exponent : nil
        }
        if let next {
            state = .number(next)
            return .incomplete
        }
        // The number ended: the byte must be valid after a value ("0" followed by a digit is not).
        guard phase.isTerminal, !isDigit else { return .invalid }
        state = .afterValue
        return step(byte)
    }
}
