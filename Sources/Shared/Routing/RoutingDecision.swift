/// One routing decision: the candidates in the order to try them, and why the first.
public struct RoutingDecision: Sendable, Equatable {
    public var order: [Int]
    public var reason: RoutingReason
    /// The share of the prompt's blocks the chosen upstream holds (nil: no whole block).
    public var matchedShare: Double?

    public init(order: [Int], reason: RoutingReason, matchedShare: Double? = nil) {
        self.order = order
        self.reason = reason
        self.matchedShare = matchedShare
    }
}
