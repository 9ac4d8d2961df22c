/// What a ``StreamingToolCallParser`` emits while it reads an assistant message.
///
/// Events map one-to-one onto OpenAI chat-completion chunk deltas: `delta.content`, and
/// `delta.tool_calls[{index, id, type: "function", function: {name, arguments: ""}}]`
/// followed by `delta.tool_calls[{index, function: {arguments: fragment}}]`.
///
/// The parsers in this module emit a call only once its markup is complete and valid (so
/// malformed markup can still be released as text), hence one start and one arguments
/// fragment per call; consumers must not rely on that and should concatenate fragments.
public enum ToolCallStreamEvent: Sendable, Hashable {
    /// Plain text to forward as `delta.content`.
    case content(String)
    /// A new call begins. `index` counts calls from zero within one choice.
    case toolCallStart(index: Int, id: String, name: String)
    /// More of the call's `arguments` JSON string; the fragments of one call concatenate
    /// to its complete arguments.
    case toolCallArguments(index: Int, fragment: String)
}
