/// How a model with several upstreams spreads its requests (`routing:` in the config file).
public enum RoutingPolicy: String, Sendable, Codable, CaseIterable {
    /// Prefix-cache affinity weighed against load (the default with several upstreams).
    case cacheAware = "cache_aware"
    /// Fewest requests in flight across all workers.
    case leastLoaded = "least_loaded"
    /// In turn, across all workers.
    case roundRobin = "round_robin"
}

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
    /// A fallback model's upstream (the model's own all failed before any byte).
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

/// The tunables of ``CacheAwarePicker`` (defaults chosen on `benchmarks/routing`).
public struct CacheAwareTuning: Sendable, Equatable {
    /// How many uncached prompt blocks (``PromptBlocks``, ~64 tokens each) of prefill cost as
    /// much as one more request in flight on the upstream: the exchange rate between cache
    /// affinity and load while the engine batches everything it is sent (a running request
    /// slows the batch a little).
    public var blocksPerRunningRequest: Double = 4
    /// The same for one request waiting in the engine's queue (its `/metrics`): the engine is
    /// saturated, and a new request waits for a whole one to finish.
    public var blocksPerWaitingRequest: Double = 64
    /// A cold prompt (or a session) goes to its hashed upstream unless that one has more than
    /// this many requests more than the least loaded.
    public var coldSlack: UInt64 = 4
    /// Engine figures older than this (microseconds) are not used: routing goes by the
    /// workers' own in-flight counts alone.
    public var engineMaxAgeMicros: UInt64 = 5_000_000

    public init() {}
}

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

/// `routing: cache_aware`, as a pure function. Each well candidate costs the prefill of the
/// prompt blocks it does not hold plus its load in the same unit: its requests in flight at
/// ``CacheAwareTuning/blocksPerRunningRequest`` blocks each, those waiting in its engine's
/// queue at ``CacheAwareTuning/blocksPerWaitingRequest``. A warm upstream keeps a
/// conversation until its load costs more than recomputing the prefix elsewhere (sticky
/// until saturated). A prompt cached nowhere, and a request with a
/// session id, go to the upstream their key hashes to (rendezvous hashing: independent
/// gateways and workers agree, and only 1/n of the keys move when an upstream comes or goes)
/// unless it is more than ``CacheAwareTuning/coldSlack`` requests busier than the least
/// loaded. Unwell upstreams come last, least loaded first: tried only when all else fails.
public struct CacheAwarePicker: UpstreamPicker {
    public var tuning: CacheAwareTuning

    public init(tuning: CacheAwareTuning = CacheAwareTuning()) { self.tuning = tuning }

    public var needsPromptMatch: Bool { true }

    public func decide(_ request: RoutingRequest) -> RoutingDecision {
        let candidates = request.candidates
        let promptBlocks = request.promptBlocks
        let session = request.sessionKey != nil
        let affinityKey = request.sessionKey ?? request.firstBlock
        let well = candidates.filter(\.isWell)
        let unwell = candidates.filter { !$0.isWell }.sorted { ($0.queue, $0.index) < ($1.queue, $1.index) }.map(\.index)
        guard !well.isEmpty else { return RoutingDecision(order: unwell, reason: .load) }
        func cost(_ c: RoutingCandidate) -> Double {
            Double(max(0, promptBlocks - c.matchedBlocks)) + Double(c.inflight) * tuning.blocksPerRunningRequest
                + Double(c.engineWaiting) * tuning.blocksPerWaitingRequest
        }
        func share(_ c: RoutingCandidate) -> Double? { promptBlocks > 0 ? Double(c.matchedBlocks) / Double(promptBlocks) : nil }
        let byCost = well.sorted { (cost($0), $0.queue, $0.index) < (cost($1), $1.queue, $1.index) }
        let leastQueue = well.map(\.queue).min() ?? 0
        let bestMatch = well.map(\.matchedBlocks).max() ?? 0
        var first = byCost[0]
        var reason: RoutingReason = first.matchedBlocks > 0 && first.matchedBlocks == bestMatch ? .prefix : .load
        if let key = affinityKey, session || bestMatch == 0 {
            let hashed = well.max { Self.rendezvous(key, $0.index) < Self.rendezvous(key, $1.index) }!
            // A session stays on its upstream, and a prompt cached nowhere goes to its hashed
            // upstream, unless that one is saturated compared with the least loaded.
            if hashed.queue <= leastQueue &+ tuning.coldSlack {
                first = hashed
                reason = session ? .session : .cold
            } else if bestMatch == 0 {
                reason = .load
            }
        }
        let order = [first.index] + byCost.filter { $0.index != first.index }.map(\.index) + unwell
        return RoutingDecision(order: order, reason: reason, matchedShare: share(first))
    }

    /// The rendezvous (highest random weight) score of upstream `index` for `key`.
    static func rendezvous(_ key: UInt64, _ index: Int) -> UInt64 {
        PromptBlocks.mix(key ^ (UInt64(index) &+ 1) &* 0x9E37_79B9_7F4A_7C15)
    }
}
