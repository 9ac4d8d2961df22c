import Shared

/// What the relay of one upstream answer needs to know.
struct RelayContext {
    var clientModel: String
    var upstreamModel: String
    var modelLabel: String
    var upstream: String
    var upstreamIndex: Int
    var identity: ClientIdentity
    var sent: MonotonicInstant
    var clientWantsUsage: Bool
    /// Tokens charged for the prompt when an answer ends without `usage` (~4 bytes each).
    var promptEstimate: Int
    var toolParser: (any ToolCallParser)?
    /// How this route's answers report usage and end their streams.
    var family: APIFamily
}
