/// What routing knows of one candidate upstream for one request.
public struct RoutingCandidate: Sendable, Equatable {
    public var index: Int
    /// Up by its last health check and its breaker closed.
    public var isWell: Bool
    /// Requests in flight to it from every worker of this gateway (exact, immediate).
    public var inflight: UInt64
    /// Requests waiting in its engine's queue (its `/metrics`, when fresh): includes other
    /// gateways' and clients' requests, but lags.
    public var engineWaiting: UInt64
    /// Leading blocks of the prompt it holds (``PrefixIndex``).
    public var matchedBlocks: Int

    public init(index: Int, isWell: Bool, inflight: UInt64, engineWaiting: UInt64 = 0, matchedBlocks: Int = 0) {
        self.index = index
        self.isWell = isWell
        self.inflight = inflight
        self.engineWaiting = engineWaiting
        self.matchedBlocks = matchedBlocks
    }

    var queue: UInt64 { inflight &+ engineWaiting }
}
