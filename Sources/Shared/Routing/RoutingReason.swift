/// Why a request went where it went: `llm_gateway_routing_decisions_total{reason}`.
public enum RoutingReason: Int, Sendable, CaseIterable {
    /// The upstream holding most of its prefix.
    case prefix = 0
    /// Its session header's upstream.
    case session
    /// The least loaded (or next in turn): nothing else decided.
    case load
    /// A prompt cached nowhere, sent where every gateway would send it.
    case cold
    /// An upstream running its LoRA adapter.
    case lora
    /// None of the model's own upstreams is well (down, or its breaker open): its fallback
    /// models serve the request.
    case fallback

    public var label: String {
        switch self {
        case .prefix: "prefix"
        case .session: "session"
        case .load: "load"
        case .cold: "cold"
        case .lora: "lora"
        case .fallback: "fallback"
        }
    }
}
