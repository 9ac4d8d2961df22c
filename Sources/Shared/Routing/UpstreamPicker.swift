/// What a picker knows of one upstream when it orders a model's upstreams: the shared
/// view every worker reads from the segment.
public struct UpstreamLoad: Sendable, Equatable {
    /// The upstream's position in the configuration.
    public var index: Int
    /// Its last health check did not fail and its breaker is closed.
    public var isWell: Bool
    /// Requests in flight to it, summed over every worker.
    public var inflightRequests: UInt64

    public init(index: Int, isWell: Bool, inflightRequests: UInt64) {
        self.index = index
        self.isWell = isWell
        self.inflightRequests = inflightRequests
    }
}

/// Orders the upstreams of one model for one request: the seam routing plugs into. The
/// exchange then tries them in that order (an open breaker is still skipped at the attempt,
/// and fallback models follow), so a picker only ranks, and must return every candidate.
///
/// A picker is a pure function of what it is given: the candidates, the request's prompt
/// bytes (the body as the client sent it, for affinity), and `load` for each candidate.
public protocol UpstreamPicker: Sendable {
    func order(_ candidates: [Int], prompt: UnsafeRawBufferPointer, load: (Int) -> UpstreamLoad) -> [Int]
}

/// Today's picker (`routing: least_loaded`): the well upstreams before the unwell ones,
/// each group by fewest requests in flight across all workers; ties keep configuration order.
public struct LeastLoadedPicker: UpstreamPicker {
    public init() {}

    public func order(_ candidates: [Int], prompt: UnsafeRawBufferPointer, load: (Int) -> UpstreamLoad) -> [Int] {
        candidates.enumerated()
            .map { (position: $0.offset, load: load($0.element)) }
            .sorted { a, b in
                (a.load.isWell ? 0 : 1, a.load.inflightRequests, a.position) < (b.load.isWell ? 0 : 1, b.load.inflightRequests, b.position)
            }
            .map(\.load.index)
    }
}

extension SharedSegment {
    /// Upstream `index` as a picker sees it.
    public func upstreamLoad(_ index: Int) -> UpstreamLoad {
        let status = upstream(index)
        return UpstreamLoad(
            index: index, isWell: status.health != .down && status.breaker.phase == .closed, inflightRequests: inflightRequests(upstream: index))
    }
}
