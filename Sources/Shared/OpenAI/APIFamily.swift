/// How one API family speaks: how an answer reports its usage, what an error looks like
/// and how a stream ends. A route of a family is an entry
/// in ``Route/family``, not a copy of the chat path: the proxy charges the usage and shapes
/// its errors by the route's family.
///
/// Today's routes are all OpenAI's; vLLM's other APIs (Anthropic Messages, Responses) are
/// families of their own: their usage counts are `input_tokens` / `output_tokens`, and
/// Anthropic errors are `{"type":"error","error":{"type","message"}}`.
public struct APIFamily: Sendable, Equatable {
    /// How errors are written.
    public enum ErrorShape: Sendable, Equatable {
        /// `{"error":{"message","type","param","code"}}`
        case openAI
        /// `{"type":"error","error":{"type","message"}}`
        case anthropic

        /// The body of `error` in this shape.
        public func body(of error: GatewayError) -> String {
            switch self {
            case .openAI: error.jsonBody
            case .anthropic: error.anthropicBody
            }
        }
    }

    /// How a stream says it is over.
    public enum StreamEnd: Sendable, Equatable {
        /// A last `data: [DONE]` event (OpenAI chat and completions).
        case doneSentinel
        /// Its last named event (`message_stop`, `response.completed`): nothing more is sent.
        case lastEvent
    }

    /// The family's name (logs, docs).
    public let name: String
    /// Where an answer (or a stream chunk) reports what it used.
    public let usage: TokenUsage.Keys
    public let errorShape: ErrorShape
    public let streamEnd: StreamEnd

    public init(name: String, usage: TokenUsage.Keys, errorShape: ErrorShape, streamEnd: StreamEnd) {
        self.name = name
        self.usage = usage
        self.errorShape = errorShape
        self.streamEnd = streamEnd
    }

    /// OpenAI's chat completions, completions and embeddings.
    public static let openAI = APIFamily(name: "openai", usage: .openAI, errorShape: .openAI, streamEnd: .doneSentinel)

    /// Anthropic's Messages API (`/v1/messages`, as vLLM serves it).
    public static let anthropic = APIFamily(
        name: "anthropic", usage: .inputOutput, errorShape: .anthropic, streamEnd: .lastEvent)

    /// The body of `error` in this family's shape.
    public func body(of error: GatewayError) -> String { errorShape.body(of: error) }

    /// The events that end a stream early with `error` (the upstream broke off, the drain
    /// timeout came) in this family's framing.
    public func streamError(_ error: GatewayError) -> String {
        switch (errorShape, streamEnd) {
        case (.anthropic, _): "event: error\ndata: \(error.anthropicBody)\n\n"
        case (.openAI, .doneSentinel): "data: \(error.jsonBody)\n\ndata: [DONE]\n\n"
        case (.openAI, .lastEvent): "event: error\ndata: \(error.jsonBody)\n\n"
        }
    }
}

extension Route {
    /// The API family a proxied route speaks; nil for the gateway's own routes.
    public var family: APIFamily? {
        switch self {
        case .chatCompletions, .completions, .embeddings: .openAI
        case .health, .ready, .metrics, .idle, .models, .other: nil
        }
    }
}
