/// How one API family speaks: how an answer reports its usage, what an error looks like
/// and how a stream ends. A route of a family is an entry
/// in ``Route/family``, not a copy of the chat path: the proxy charges the usage and shapes
/// its errors by the route's family.
///
/// OpenAI's chat, completions and the pooling APIs vLLM serves beside them (embeddings,
/// rerank, score, pooling, classify, tokenize) are one family; the Responses API and
/// Anthropic's Messages are families of their own: their usage counts are `input_tokens` /
/// `output_tokens`, inside the `response` / `message` object of some stream events, and
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
    /// A streamed request gets `stream_options.include_usage` (OpenAI's chat and completions
    /// report usage only when asked; the other families always do).
    public let asksForStreamUsage: Bool
    /// The object in a stream event that carries `model` (and `usage`) when the event's top
    /// level does not: `response` (Responses), `message` (Anthropic's `message_start`).
    public let eventContainer: String?

    public init(
        name: String, usage: TokenUsage.Keys, errorShape: ErrorShape, streamEnd: StreamEnd, asksForStreamUsage: Bool = false,
        eventContainer: String? = nil
    ) {
        self.name = name
        self.usage = usage
        self.errorShape = errorShape
        self.streamEnd = streamEnd
        self.asksForStreamUsage = asksForStreamUsage
        self.eventContainer = eventContainer
    }

    /// OpenAI's chat completions, completions, and the pooling and tokenizer APIs.
    public static let openAI = APIFamily(name: "openai", usage: .openAI, errorShape: .openAI, streamEnd: .doneSentinel, asksForStreamUsage: true)

    /// OpenAI's Responses API (`/v1/responses`): named events, the last `response.completed`
    /// (or `response.failed`, `response.incomplete`), whose `response` carries the usage.
    public static let responses = APIFamily(
        name: "responses", usage: .inputOutput(in: "response"), errorShape: .openAI, streamEnd: .lastEvent, eventContainer: "response")

    /// Anthropic's Messages API (`/v1/messages`, as vLLM serves it): `message_start`'s
    /// `message` carries the input tokens, `message_delta` the output tokens so far.
    public static let anthropic = APIFamily(
        name: "anthropic", usage: .inputOutput(in: "message"), errorShape: .anthropic, streamEnd: .lastEvent, eventContainer: "message")

    /// Speech to text (`/v1/audio/transcriptions`, `/v1/audio/translations`): a multipart
    /// upload; a stream is OpenAI-style chunks ending in `[DONE]`, whose usage chunk comes
    /// only when the form asks (`stream_include_usage`). A whole answer's `usage` is audio
    /// seconds (`{"type":"duration"}`), not tokens.
    public static let audio = APIFamily(name: "audio", usage: .openAI, errorShape: .openAI, streamEnd: .doneSentinel, asksForStreamUsage: true)

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
        case .chatCompletions, .completions, .embeddings, .rerank, .rerankUnversioned, .rerankV2, .score, .scoreUnversioned, .tokenize, .detokenize, .pooling,
            .classify:
            .openAI
        case .responses, .response, .responseCancel: .responses
        case .messages, .messagesCountTokens: .anthropic
        case .transcriptions, .translations: .audio
        case .health, .ready, .metrics, .idle, .models, .other: nil
        }
    }
}
