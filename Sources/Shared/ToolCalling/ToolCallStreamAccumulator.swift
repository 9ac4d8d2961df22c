/// Rebuilds a whole message from ``ToolCallStreamEvent``s, as an OpenAI client does.
///
/// Useful for logging the final message of a streamed response and for tests.
public struct ToolCallStreamAccumulator: Sendable, Hashable {
    /// The concatenated content deltas.
    public private(set) var content: String = ""
    /// The calls started so far, with their arguments concatenated, in index order.
    public private(set) var toolCalls: [ToolCall] = []

    /// Creates an empty accumulator.
    public init() {}

    /// Applies one event. Events for an index that was never started are ignored.
    public mutating func apply(_ event: ToolCallStreamEvent) {
        switch event {
        case .content(let text):
            content += text
        case .toolCallStart(let index, let id, let name):
            guard index == toolCalls.count else { return }
            toolCalls.append(ToolCall(id: id, name: name, arguments: ""))
        case .toolCallArguments(let index, let fragment):
            guard toolCalls.indices.contains(index) else { return }
            toolCalls[index].function.arguments += fragment
        }
    }

    /// Applies events in order.
    public mutating func apply(_ events: [ToolCallStreamEvent]) {
        for event in events { apply(event) }
    }
}
