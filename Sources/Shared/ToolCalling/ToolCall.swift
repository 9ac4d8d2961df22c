/// One tool call in OpenAI's chat-completion shape:
/// `{"id": "call_…", "type": "function", "function": {"name": "…", "arguments": "{…}"}}`.
///
/// `arguments` is always a JSON *string* holding a JSON object, exactly as OpenAI sends it.
public struct ToolCall: Sendable, Hashable, Codable {
    /// The function a ``ToolCall`` invokes.
    public struct Function: Sendable, Hashable, Codable {
        /// The function's name, as declared in the request's `tools`.
        public var name: String
        /// The arguments as compact JSON object text, e.g. `{"city":"Paris"}`.
        public var arguments: String

        /// Creates a function invocation.
        public init(name: String, arguments: String) {
            self.name = name
            self.arguments = arguments
        }
    }

    /// The call's id (`call_` followed by 24 alphanumerics unless a custom generator is used).
    public var id: String
    /// Always `"function"`.
    public var type: String
    /// The invoked function.
    public var function: Function

    /// Creates a function tool call.
    public init(id: String, name: String, arguments: String) {
        self.id = id
        self.type = "function"
        self.function = Function(name: name, arguments: arguments)
    }
}
