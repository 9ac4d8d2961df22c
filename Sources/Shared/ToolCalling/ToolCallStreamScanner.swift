/// The engine behind every family's ``StreamingToolCallParser`` and ``ToolCallParser/parse(_:)``.
///
/// It keeps the bytes it cannot decide yet in `buffer` (from `head` on). Plain text before the first
/// candidate (see ``ToolCallSyntax/candidateStart(in:context:)``) is emitted at once, except
/// a trailing run of whitespace, which belongs to a call that may follow. A candidate is fed
/// to the family's matcher byte by byte until it is accepted (the whitespace before it and
/// its markup become call markup) or rejected (its first byte becomes text and the scan
/// resumes after it). Whitespace between the last call and the end of the text is markup too.
///
/// Every decision depends only on the bytes read so far, never on how they were chunked, so
/// ``parse(_:syntax:idGenerator:)`` is simply one `feed` of the whole text plus `finish`.
struct ToolCallStreamScanner<Syntax: ToolCallSyntax>: StreamingToolCallParser {
    private struct ActiveCandidate: Sendable {
        var start: Int
        var matcher: Syntax.Matcher
        var nextByte: Int
    }

    private enum Resolution {
        case rejected
        case accepted([ExtractedToolCall], end: Int)
    }

    private let syntax: Syntax
    private var idGenerator: ToolCallIDGenerator
    /// Bytes before `head` are decided; the buffer is compacted after every feed.
    private var buffer: [UInt8] = []
    private var head = 0
    /// Text decided during the current feed, emitted as one content event.
    private var pendingContent: [UInt8] = []
    /// `buffer[head..<blankEnd]` is whitespace already searched for candidates, so a long
    /// run of whitespace is not searched again on every feed.
    private var blankEnd = 0
    private var active: ActiveCandidate?
    private var context = ToolCallScanContext()
    private var callCount = 0
    private var isFinished = false
    /// Only kept by ``parse(_:syntax:idGenerator:)``; a stream must not grow with its output.
    private var segments: [ParsedToolCalls.Segment]?

    /// Creates a scanner at the start of a message.
    init(syntax: Syntax, idGenerator: ToolCallIDGenerator) {
        self.syntax = syntax
        self.idGenerator = idGenerator
    }

    /// Parses a whole message with the same machine that streams it.
    static func parse(_ text: String, syntax: Syntax, idGenerator: ToolCallIDGenerator) -> ParsedToolCalls {
        var scanner = ToolCallStreamScanner(syntax: syntax, idGenerator: idGenerator)
        scanner.segments = []
        var accumulator = ToolCallStreamAccumulator()
        accumulator.apply(scanner.feed(text))
        accumulator.apply(scanner.finish())
        return ParsedToolCalls(
            content: accumulator.content.isEmpty ? nil : accumulator.content,
            toolCalls: accumulator.toolCalls,
            segments: scanner.segments ?? []
        )
    }

    mutating func feed(_ chunk: String) -> [ToolCallStreamEvent] {
        if isFinished { return chunk.isEmpty ? [] : [.content(chunk)] }
        buffer.append(contentsOf: chunk.utf8)
        var events: [ToolCallStreamEvent] = []
        advance(isFinal: false, into: &events)
        return events
    }

    mutating func finish() -> [ToolCallStreamEvent] {
        if isFinished { return [] }
        var events: [ToolCallStreamEvent] = []
        advance(isFinal: true, into: &events)
        isFinished = true
        return events
    }

    private mutating func advance(isFinal: Bool, into events: inout [ToolCallStreamEvent]) {
        defer {
            flushContent(into: &events)
            compact()
        }
        while true {
            if let start = active?.start {
                guard let resolution = resolveActiveCandidate(isFinal: isFinal) else { return }
                active = nil
                switch resolution {
                case .rejected:
                    takeContent(upTo: start + 1)
                case .accepted(let calls, let end):
                    flushContent(into: &events)
                    emitCalls(calls, markupEnd: end, into: &events)
                }
                continue
            }
            // Bytes before `scanFrom` are known to be whitespace holding no candidate.
            let scanFrom = max(head, blankEnd)
            let candidateStart = syntax.candidateStart(in: buffer[scanFrom...], context: context)
            var textEnd = candidateStart ?? buffer.count
            while textEnd > scanFrom, ToolCallBytes.isWhitespace(buffer[textEnd - 1]) { textEnd -= 1 }
            if textEnd == scanFrom { textEnd = head }
            if textEnd > head {
                // The context changes once text is emitted; look for candidates again.
                takeContent(upTo: textEnd)
                continue
            }
            if let start = candidateStart {
                active = ActiveCandidate(start: start, matcher: syntax.makeMatcher(context: context), nextByte: start)
                continue
            }
            blankEnd = buffer.count
            if isFinal, head < buffer.count {
                if context.followsToolCall {
                    appendMarkup(upTo: buffer.count)
                } else {
                    takeContent(upTo: buffer.count)
                }
            }
            return
        }
    }

    /// Feeds the active candidate the bytes it has not seen; `nil` while undecided.
    /// Mutates `active` in place so the matcher's buffers are never copied.
    private mutating func resolveActiveCandidate(isFinal: Bool) -> Resolution? {
        while let next = active?.nextByte, next < buffer.count {
            active?.nextByte = next + 1
            guard let step = active?.matcher.consume(buffer[next]) else { return nil }
            if let resolution = Self.resolution(of: step, end: next + 1) { return resolution }
        }
        guard isFinal, let end = active?.nextByte, let step = active?.matcher.finish() else { return nil }
        return Self.resolution(of: step, end: end) ?? .rejected
    }

    private static func resolution(of step: ToolCallMatchStep, end: Int) -> Resolution? {
        switch step {
        case .undecided: return nil
        case .rejected: return .rejected
        case .accepted(let calls): return calls.isEmpty ? .rejected : .accepted(calls, end: end)
        }
    }

    /// Marks `buffer[head..<end]` as text.
    private mutating func takeContent(upTo end: Int) {
        let text = buffer[head..<end]
        if text.contains(where: { !ToolCallBytes.isWhitespace($0) }) {
            context = ToolCallScanContext(isAtStartOfOutput: false, followsToolCall: false)
        }
        pendingContent.append(contentsOf: text)
        head = end
        blankEnd = 0
    }

    private mutating func flushContent(into events: inout [ToolCallStreamEvent]) {
        guard !pendingContent.isEmpty else { return }
        let text = String(decoding: pendingContent, as: UTF8.self)
        pendingContent.removeAll(keepingCapacity: true)
        events.append(.content(text))
        if case .content(let previous)? = segments?.last, let last = segments?.indices.last {
            segments?[last] = .content(previous + text)
        } else {
            segments?.append(.content(text))
        }
    }

    private mutating func emitCalls(
        _ calls: [ExtractedToolCall], markupEnd: Int, into events: inout [ToolCallStreamEvent]
    ) {
        let firstIndex = callCount
        for call in calls {
            events.append(.toolCallStart(index: callCount, id: idGenerator.next(), name: call.name))
            events.append(.toolCallArguments(index: callCount, fragment: call.arguments))
            callCount += 1
        }
        if segments != nil {
            let markup = String(decoding: buffer[head..<markupEnd], as: UTF8.self)
            segments?.append(.toolCalls(source: markup, indices: firstIndex..<callCount))
        }
        head = markupEnd
        blankEnd = 0
        context = ToolCallScanContext(isAtStartOfOutput: false, followsToolCall: true)
    }

    /// Adds the trailing whitespace after the last call to that call's markup.
    private mutating func appendMarkup(upTo end: Int) {
        if case .toolCalls(let source, let indices)? = segments?.last, let last = segments?.indices.last {
            let markup = String(decoding: buffer[head..<end], as: UTF8.self)
            segments?[last] = .toolCalls(source: source + markup, indices: indices)
        }
        head = end
        blankEnd = 0
    }

    /// Drops decided bytes so the buffer holds only what is still undecided.
    private mutating func compact() {
        guard head > 0 else { return }
        buffer.removeFirst(head)
        active?.start -= head
        active?.nextByte -= head
        blankEnd = max(0, blankEnd - head)
        head = 0
    }
}
