/// What ``ToolRequestValidator`` learnt about a request that passed validation.
public struct ValidatedToolRequest: Sendable, Hashable {
    /// A request's `tool_choice`, after validation.
    public enum ToolChoice: Sendable, Hashable {
        /// `"none"`: the model must not call tools.
        case none
        /// `"auto"`: the model decides.
        case auto
        /// `"required"`: the model must call at least one tool.
        case required
        /// `{"type": "function", "function": {"name": …}}`: the model must call this function.
        case function(name: String)
    }

    /// The declared function names, in request order; empty without `tools`.
    public var functionNames: [String]
    /// The effective `tool_choice`: as sent, else `.auto` with tools and `.none` without.
    public var toolChoice: ToolChoice
    /// `parallel_tool_calls` as sent, `nil` when absent.
    public var parallelToolCalls: Bool?

    /// Creates a summary.
    public init(functionNames: [String], toolChoice: ToolChoice, parallelToolCalls: Bool?) {
        self.functionNames = functionNames
        self.toolChoice = toolChoice
        self.parallelToolCalls = parallelToolCalls
    }

    /// Whether the model may call tools, i.e. its output needs tool-call parsing.
    public var usesTools: Bool {
        !functionNames.isEmpty && toolChoice != .none
    }
}
