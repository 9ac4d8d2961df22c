/// One request as routing sees it.
public struct RoutingRequest: Sendable {
    public var candidates: [RoutingCandidate]
    /// Whole blocks in the prompt (``PromptBlocks``); 0 when it has none or none were cut.
    public var promptBlocks: Int
    /// The hash of the prompt's first block.
    public var firstBlock: UInt64?
    /// The hash of the request's session id (`ROUTING_SESSION_HEADER`), if it sent one.
    public var sessionKey: UInt64?
    /// A number shared by all workers that grows by one per request (round robin).
    public var ticket: UInt64

    public init(candidates: [RoutingCandidate], promptBlocks: Int = 0, firstBlock: UInt64? = nil, sessionKey: UInt64? = nil, ticket: UInt64 = 0) {
        self.candidates = candidates
        self.promptBlocks = promptBlocks
        self.firstBlock = firstBlock
        self.sessionKey = sessionKey
        self.ticket = ticket
    }
}
