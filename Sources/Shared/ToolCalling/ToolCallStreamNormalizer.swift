import Foundation

/// Turns raw tool-call text in a streamed chat completion into OpenAI streaming
/// `delta.tool_calls`, one SSE event at a time. Make one per streamed response.
///
/// Per choice index, `delta.content` goes through the parser's ``StreamingToolCallParser``:
/// plain text is forwarded at once (only bytes that may begin a call are held back), each
/// call becomes a start entry `{"index","id","type":"function","function":{"name","arguments":""}}`
/// followed by `{"index","function":{"arguments":fragment}}`, each in its own chunk. When a
/// choice's `finish_reason` arrives the parser is finished first and the reason becomes
/// `"tool_calls"` if calls were emitted for that choice. A choice whose deltas carry
/// structured `tool_calls` is passed through untouched from then on.
///
/// Events that need no change are returned as given (same bytes); rebuilt chunks keep every
/// top-level member of the upstream chunk (`id`, `object`, `created`, `model`, …) byte for
/// byte and re-encode only `choices`. Usage-only chunks, comments and non-JSON events pass
/// through; before `data: [DONE]` (or at ``finish()``) text still held back is released.
public struct ToolCallStreamNormalizer: Sendable {
    private struct ChoiceState: Sendable {
        var parser: any StreamingToolCallParser
        /// The upstream sends structured `tool_calls` for this choice: leave it alone.
        var passthrough = false
        /// `finish_reason` arrived (the parser was finished).
        var finished = false
        /// Calls emitted so far for this choice.
        var callCount = 0
    }

    private let parser: any ToolCallParser
    private var choices: [Int: ChoiceState] = [:]
    /// Raw `"key":value` texts of the last chunk's `id`, `object`, `created` and `model`, for
    /// the chunk that releases held-back text at the end.
    private var envelope: [UInt8]?

    /// The members of a chunk that make up the envelope of a synthesised chunk.
    private static let envelopeKeys = ["id", "object", "created", "model"]

    /// Creates a normaliser for one streamed response, parsing with `parser`.
    public init(parser: any ToolCallParser) {
        self.parser = parser
    }

    /// Takes one complete SSE event (with its terminating blank line, e.g.
    /// `data: {…}\n\n` or `data: [DONE]\n\n`) and returns the events to send instead, in
    /// order: the same event when nothing changes, none while text is held back, several
    /// when one chunk carried text and calls.
    public mutating func transform(event: [UInt8]) -> [[UInt8]] {
        guard let data = SSEEventBuffer.data(of: event) else { return [event] }
        if Self.isDone(data) { return finish() + [event] }
        guard data.first == UInt8(ascii: "{"),
            let members = try? JSONScanner.objectMembers(data),
            let choicesMember = members.first(where: { $0.key == "choices" }),
            let upstreamChoices = ToolCallResponseNormalizer.decodeValue(data[choicesMember.value]) as? [Any],
            !upstreamChoices.isEmpty
        else { return [event] }
        recordEnvelope(data, members: members)

        var pieces: [[[String: Any]]] = []
        var changed = false
        for (position, element) in upstreamChoices.enumerated() {
            guard let choice = element as? [String: Any] else { return [event] }
            let index = (choice["index"] as? Int) ?? position
            if let rebuilt = normalize(choice, index: index) {
                pieces.append(rebuilt)
                changed = true
            } else {
                pieces.append([choice])
            }
        }
        guard changed else { return [event] }

        let hasUsage = members.contains { $0.key == "usage" && data[$0.value.lowerBound] != UInt8(ascii: "n") }
        let chunkCount = pieces.map(\.count).max() ?? 0
        if chunkCount == 0 {
            // Everything was held back; keep the chunk only for its usage statistics.
            return hasUsage ? Self.chunk(data, choicesRange: choicesMember.value, choices: []).map { [$0] } ?? [event] : []
        }
        var out: [[UInt8]] = []
        for number in 0..<chunkCount {
            let chunkChoices: [Any] = pieces.compactMap { number < $0.count ? $0[number] : nil }
            guard let chunk = Self.chunk(data, choicesRange: choicesMember.value, choices: chunkChoices) else {
                return [event]
            }
            out.append(chunk)
        }
        return out
    }

    /// Ends the stream when the upstream stopped without `data: [DONE]`: returns chunks with
    /// the text still held back for every choice that never got a `finish_reason`. Calling
    /// it again (or after `[DONE]`) returns nothing.
    public mutating func finish() -> [[UInt8]] {
        var pieces: [Any] = []
        for index in choices.keys.sorted() {
            guard var state = choices[index], !state.passthrough, !state.finished else { continue }
            let events = state.parser.finish()
            state.finished = true
            let deltas = Self.deltas(for: events, callCount: &state.callCount)
            choices[index] = state
            for delta in deltas {
                pieces.append(["index": index, "delta": delta, "logprobs": NSNull(), "finish_reason": NSNull()])
            }
        }
        guard !pieces.isEmpty, let envelope else { return [] }
        return pieces.compactMap { piece in
            guard let encoded = ToolCallResponseNormalizer.encode([piece]) else { return nil }
            let separator: [UInt8] = envelope.isEmpty ? [] : [UInt8(ascii: ",")]
            return Self.event(Array("{".utf8) + envelope + separator + Array(#""choices":"#.utf8) + encoded + Array("}".utf8))
        }
    }

    // MARK: - One choice

    /// The choice objects to send for `choice`, in order, or `nil` when it passes unchanged.
    private mutating func normalize(_ choice: [String: Any], index: Int) -> [[String: Any]]? {
        var state = choices[index] ?? ChoiceState(parser: parser.makeStreamingParser())
        defer { choices[index] = state }
        if state.passthrough { return nil }
        let delta = choice["delta"] as? [String: Any] ?? [:]
        let upstreamFinish = choice["finish_reason"] as? String

        if !ToolCallResponseNormalizer.isAbsentOrEmpty(delta["tool_calls"]) {
            // The upstream parses calls itself: release what was held back, then step aside.
            state.passthrough = true
            let held = state.finished ? [] : state.parser.finish()
            let released = Self.deltas(for: held, callCount: &state.callCount)
            if released.isEmpty { return nil }
            return released.map { ["index": index, "delta": $0, "logprobs": NSNull(), "finish_reason": NSNull()] }
                + [choice]
        }

        let content = delta["content"] as? String
        var events = content.map { state.parser.feed($0) } ?? []
        if upstreamFinish != nil && !state.finished {
            events += state.parser.finish()
            state.finished = true
        }
        let callsBefore = state.callCount
        var deltas = Self.deltas(for: events, callCount: &state.callCount)
        let finish = state.callCount > 0 && upstreamFinish != nil ? "tool_calls" : upstreamFinish
        if state.callCount == callsBefore && finish == upstreamFinish
            && Self.contentText(of: events).utf8.elementsEqual((content ?? "").utf8)
        {
            return nil
        }

        // Members of the delta other than the text (`role`, `reasoning_content`, …) ride on
        // the first piece; the finish reason on the last.
        let extras = delta.filter { $0.key != "content" && $0.key != "tool_calls" }
        if deltas.isEmpty && (!extras.isEmpty || upstreamFinish != nil) { deltas = [[:]] }
        if !extras.isEmpty { deltas[0].merge(extras) { current, _ in current } }
        return deltas.enumerated().map { number, delta in
            var piece: [String: Any]
            if number == 0 {
                piece = choice.filter { $0.key != "stop_reason" }
            } else {
                piece = ["index": choice["index"] ?? index, "logprobs": NSNull()]
            }
            piece["delta"] = delta
            piece["finish_reason"] = NSNull()
            if number == deltas.count - 1 {
                piece["finish_reason"] = finish ?? NSNull()
                if let stopReason = choice["stop_reason"] { piece["stop_reason"] = stopReason }
            }
            return piece
        }
    }

    /// OpenAI deltas for parser events: runs of text merged into one `content` delta, each
    /// call start and arguments fragment in its own `tool_calls` delta.
    private static func deltas(for events: [ToolCallStreamEvent], callCount: inout Int) -> [[String: Any]] {
        var deltas: [[String: Any]] = []
        var text = ""
        func flushText() {
            if !text.isEmpty { deltas.append(["content": text]) }
            text = ""
        }
        for event in events {
            switch event {
            case .content(let piece):
                text += piece
            case .toolCallStart(let index, let id, let name):
                flushText()
                callCount = max(callCount, index + 1)
                let function: [String: Any] = ["name": name, "arguments": ""]
                let entry: [String: Any] = ["index": index, "id": id, "type": "function", "function": function]
                deltas.append(["tool_calls": [entry]])
            case .toolCallArguments(let index, let fragment):
                flushText()
                let function: [String: Any] = ["arguments": fragment]
                let entry: [String: Any] = ["index": index, "function": function]
                deltas.append(["tool_calls": [entry]])
            }
        }
        flushText()
        return deltas
    }

    /// The text of the content events, concatenated.
    private static func contentText(of events: [ToolCallStreamEvent]) -> String {
        var text = ""
        for case .content(let piece) in events { text += piece }
        return text
    }

    // MARK: - Chunks and events

    private mutating func recordEnvelope(_ data: [UInt8], members: [JSONScanner.Member]) {
        var parts: [[UInt8]] = []
        for key in Self.envelopeKeys {
            guard let member = members.first(where: { $0.key == key }) else { continue }
            parts.append(Array(JSON.quoted(key).utf8) + [UInt8(ascii: ":")] + Array(data[member.value]))
        }
        envelope = Array(parts.joined(separator: [UInt8(ascii: ",")]))
    }

    /// The chunk `data` with its `choices` replaced, as an SSE event.
    private static func chunk(_ data: [UInt8], choicesRange: Range<Int>, choices: [Any]) -> [UInt8]? {
        guard let encoded = ToolCallResponseNormalizer.encode(choices) else { return nil }
        return event(JSONSplice.apply([(choicesRange, encoded)], to: data))
    }

    private static func event(_ json: [UInt8]) -> [UInt8] {
        Array("data: ".utf8) + json + [0x0A, 0x0A]
    }

    private static func isDone(_ data: [UInt8]) -> Bool {
        var trimmed = data[...]
        while let last = trimmed.last, last == 0x20 || last == 0x0A || last == 0x0D || last == 0x09 {
            trimmed = trimmed.dropLast()
        }
        return trimmed.elementsEqual("[DONE]".utf8)
    }
}
