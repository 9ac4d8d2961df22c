/// One routing decision: the candidates in the order to try them, and why the first.
public struct RoutingDecision: Sendable, Equatable {
    public var order: [Int]
    public var reason: RoutingReason
    /// The share of the prompt's blocks the chosen upstream holds (nil: no whole block).
    public var matchedShare: Double?
    /// The prompt's blocks, and those of them the chosen upstream does not hold: the prefill
    /// the request brings it (0 when the prompt was not cut into blocks).
    public var promptBlocks: Int
    public var uncachedBlocks: Int

    public init(order: [Int], reason: RoutingReason, matchedShare: Double? = nil, promptBlocks: Int = 0, uncachedBlocks: Int = 0) {
        self.order = order
        self.reason = reason
        self.matchedShare = matchedShare
        self.promptBlocks = promptBlocks
        self.uncachedBlocks = uncachedBlocks
    }
}
