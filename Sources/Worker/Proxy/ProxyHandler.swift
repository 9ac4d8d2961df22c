import Logging
import NIOCore
import NIOHTTP1
import Shared

/// Forwards `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` to the model's
/// upstream: least in-flight upstream first (skipping open breakers), then the model's
/// fallbacks, moving on only while no byte has reached the client. Streams pass through
/// event by event; usage is always requested upstream (for token limits and metrics) and
/// the extra usage chunk is removed again when the client did not ask for it.
///
/// This part decides synchronously (body, model, scope, limits, plan); a ``ProxyExchange``
/// then carries the request through the upstream attempts on the event loop. A class: each
/// exchange holds it, and a reference costs one retain where the fields would cost ten.
final class ProxyHandler: Sendable {
    let registry: ModelRegistry
    let upstreams: UpstreamPools
    let segment: SharedSegment
    let slot: WorkerSlot
    let demo: DemoModel
    let limiter: RequestLimiter
    /// With `REDIS_URL`: the limits shared with the other hosts (``limiter`` is then their
    /// failure mode's store).
    let sharedLimits: SharedLimits?
    let metrics: GatewayMetrics
    let breaker: GatewayConfiguration.CircuitBreaker
    let upstreamTimeout: Double
    /// `cache_aware` routing's tunables.
    let routingTuning: CacheAwareTuning
    /// One picker per routing policy, made once (not per request).
    private let pickers: [any UpstreamPicker]
    /// `MAX_TOOLS_PER_REQUEST`.
    let maxTools: Int
    /// `MAX_SSE_EVENT_BYTES`.
    let maxEventBytes: Int
    let logger: Logger

    init(
        registry: ModelRegistry, upstreams: UpstreamPools, segment: SharedSegment, slot: WorkerSlot, demo: DemoModel,
        limiter: RequestLimiter, sharedLimits: SharedLimits? = nil, metrics: GatewayMetrics, breaker: GatewayConfiguration.CircuitBreaker,
        upstreamTimeout: Double, maxTools: Int = 128, maxEventBytes: Int = 16 << 20, routingTuning: CacheAwareTuning = CacheAwareTuning(),
        logger: Logger
    ) {
        self.registry = registry
        self.upstreams = upstreams
        self.segment = segment
        self.slot = slot
        self.demo = demo
        self.limiter = limiter
        self.sharedLimits = sharedLimits
        self.metrics = metrics
        self.breaker = breaker
        self.upstreamTimeout = upstreamTimeout
        self.routingTuning = routingTuning
        self.pickers = RoutingPolicy.allCases.map { $0.picker(tuning: routingTuning) }
        self.maxTools = maxTools
        self.maxEventBytes = maxEventBytes
        self.logger = logger
    }

    /// Largest non-streamed upstream response accepted.
    static let maxResponseBytes = 64 << 20

    /// One upstream to try.
    struct Attempt {
        var target: ModelRegistry.Target
        var upstream: Int
        /// The prompt blocks routing expects it to prefill (0: not routed by prompt).
        var prefillBlocks: UInt64 = 0
        /// Its model is routed by prompt (``PrefixIndex``): sending the request there records
        /// the prompt's blocks (``AttemptPlan/promptBlocks``) for it.
        var recordsPrompt = false
    }

    func handle(_ request: GatewayRequest, identity: ClientIdentity, writer: ResponseWriter) {
        if request.route.namesResponse {
            handleStoredResponse(request, identity: identity, writer: writer)
            return
        }
        let body: OpenAIRequestBody
        let previousResponse: String?
        do {
            body = try OpenAIRequestBody(bytes: Array(buffer: request.body))
            previousResponse = request.route == .responses ? try body.previousResponseID() : nil
        } catch let error as GatewayError {
            writer.send(error: error)
            return
        } catch {
            writer.send(error: .badRequest("Invalid request body."))
            return
        }
        guard let modelName = body.model, !modelName.isEmpty else {
            writer.send(error: .badRequest("You must provide a model parameter.", param: "model", code: "missing_model"))
            return
        }
        guard let target = registry.resolve(modelName, segment: segment) else {
            writer.send(error: .modelNotFound(modelName))
            return
        }
        if let allowed = identity.models, !allowed.contains(target.name) {
            writer.send(error: .forbidden(model: modelName))
            return
        }
        writer.request.logFields.model = target.configured ? target.name : "other"
        if request.route == .chatCompletions, target.configured,
            let refusal = ToolCallResponseNormalizer.preflight(body: body, parserName: target.toolParser, maxTools: maxTools)
        {
            writer.send(error: refusal)
            return
        }
        guard let sharedLimits else {
            guard admitted(limiter.admit(identity), writer: writer) else { return }
            forward(request, body: body, target: target, clientModel: modelName, identity: identity, previousResponse: previousResponse, writer: writer)
            return
        }
        sharedLimits.admit(identity) { [self] verdict in
            guard admitted(verdict, writer: writer) else { return }
            forward(request, body: body, target: target, clientModel: modelName, identity: identity, previousResponse: previousResponse, writer: writer)
        }
    }

    /// An upload whose `model` was just read: resolved, scoped and admitted like a JSON
    /// request, then routed; its exchange opens the connection and takes the body from there.
    /// Refused, it is answered (the rest of its body is not read: the connection closes).
    func routeUpload(_ upload: FormUpload, model modelName: String) {
        let writer = upload.writer
        let refuse = { (error: GatewayError) in
            upload.stop()
            writer.send(error: error)
        }
        guard !modelName.isEmpty else {
            refuse(.badRequest("You must provide a model parameter.", param: "model", code: "missing_model"))
            return
        }
        guard let target = registry.resolve(modelName, segment: segment) else {
            refuse(.modelNotFound(modelName))
            return
        }
        if let allowed = upload.identity.models, !allowed.contains(target.name) {
            refuse(.forbidden(model: modelName))
            return
        }
        writer.request.logFields.model = target.configured ? target.name : "other"
        let start = { [self] in
            let attempts = plan(target, for: upload.identity, body: .empty, sessionID: upload.request.head.sessionID)
            let exchange = ProxyExchange(
                proxy: self, request: upload.request, body: .empty, clientModel: modelName, identity: upload.identity, writer: writer,
                attempts: attempts, upload: upload)
            upload.exchange = exchange
            exchange.start()
        }
        guard let sharedLimits else {
            guard admitted(limiter.admit(upload.identity), writer: writer) else { return upload.stop() }
            start()
            return
        }
        sharedLimits.admit(upload.identity) { [self] verdict in
            guard upload.phase == .routing else { return }
            guard admitted(verdict, writer: writer) else { return upload.stop() }
            start()
        }
    }

    /// Routes an admitted request and starts its exchange.
    private func forward(
        _ request: GatewayRequest, body: OpenAIRequestBody, target: ModelRegistry.Target, clientModel: String, identity: ClientIdentity,
        previousResponse: String?, writer: ResponseWriter
    ) {
        var attempts = plan(target, for: identity, body: body, sessionID: request.head.sessionID)
        // A follow-up of a stored response goes to the upstream that holds it, and only there:
        // another has not got it (its 404 would tell the client the response is gone).
        if let previousResponse, let owner = segment.responseOwners.owner(of: previousResponse) {
            attempts.keepOnly(upstream: owner.upstream)
        }
        ProxyExchange(proxy: self, request: request, body: body, clientModel: clientModel, identity: identity, writer: writer, attempts: attempts)
            .start()
    }

    /// `GET /v1/responses/{id}` and `POST /v1/responses/{id}/cancel`: to the upstream that
    /// created the response when the shared table remembers it, then (on a 404) to the other
    /// upstreams that may hold it: those of its model, or of every model the key may use when
    /// the table has forgotten the id. When none holds it, the client gets the gateway's own
    /// 404 (see ``ProxyExchangeStateMachine/notFoundSeen``), unless the upstream that made it
    /// could not be asked (down, breaker open, a 5xx): then that failure's 502 or 503.
    private func handleStoredResponse(_ request: GatewayRequest, identity: ClientIdentity, writer: ResponseWriter) {
        guard let id = Route.responseID(inPath: request.head.uri) else {
            writer.send(error: .routeNotFound(method: request.route.method, path: request.route.template))
            return
        }
        let owner = segment.responseOwners.owner(of: id)
        let targets: [ModelRegistry.Target]
        if let owner, let position = owner.modelPosition, let target = registry.configuredTarget(position: position) {
            targets = [target]
        } else {
            targets = registry.targets(allowed: identity.models, segment: segment)
        }
        // A response made for a model the key may not use is, for this key, not there.
        guard let first = targets.first, identity.models?.contains(first.name) ?? true else {
            writer.send(error: .responseNotFound(id))
            return
        }
        writer.request.logFields.model = first.configured ? first.name : "other"
        guard let sharedLimits else {
            guard admitted(limiter.admit(identity), writer: writer) else { return }
            forwardStored(request, targets: targets, owner: owner, identity: identity, writer: writer)
            return
        }
        sharedLimits.admit(identity) { [self] verdict in
            guard admitted(verdict, writer: writer) else { return }
            forwardStored(request, targets: targets, owner: owner, identity: identity, writer: writer)
        }
    }

    private func forwardStored(
        _ request: GatewayRequest, targets: [ModelRegistry.Target], owner: ResponseOwners.Owner?, identity: ClientIdentity, writer: ResponseWriter
    ) {
        let first = targets[0]
        var attempts: [Attempt] = []
        for target in targets {
            for upstream in target.upstreams where !attempts.contains(where: { $0.upstream == upstream }) {
                attempts.append(Attempt(target: target, upstream: upstream))
            }
        }
        var plan = AttemptPlan(attempts)
        if let owner { plan.moveFirst(upstream: owner.upstream) }
        // The upstream that made it, if it cannot be asked, may still hold it: not a 404.
        let ownerFirst = owner.map { owner in attempts.contains { $0.upstream == owner.upstream } } ?? false
        ProxyExchange(
            proxy: self, request: request, body: .empty, clientModel: first.name, identity: identity, writer: writer, attempts: plan,
            firstHoldsIt: ownerFirst
        ).start()
    }

    /// What the shared limits decided: false, and the 429 or 503 sent, when they refuse it
    /// (nothing is sent to a client that hung up meanwhile).
    private func admitted(_ verdict: SharedLimits.Verdict, writer: ResponseWriter) -> Bool {
        guard !writer.clientGone else { return false }
        switch verdict {
        case .decided(let admission):
            return admitted(admission, writer: writer)
        case .unavailable(let retryAfter):
            writer.send(error: .limitsUnavailable(retryAfterSeconds: retryAfter))
            return false
        }
    }

    /// The key's request (and token) limits: false, and the 429 sent, when they refuse it.
    private func admitted(_ admission: RequestLimiter.Admission, writer: ResponseWriter) -> Bool {
        writer.request.extraHeaders = admission.headers
        guard let refusal = admission.refusal else { return true }
        metrics.rateLimited(refusal)
        let message =
            switch refusal {
            case .requests: "Rate limit reached for requests per minute (\(admission.requestsPerMinute)) of this key."
            case .tokens: "Rate limit reached for tokens per minute (\(admission.tokensPerMinute)) of this key."
            case .tableFull: "Too many distinct keys are active; try again shortly."
            }
        writer.send(error: .rateLimited(message, retryAfterSeconds: admission.retryAfterSeconds))
        return false
    }

    /// The upstreams to try, in order: one, usually, which takes no array.
    struct AttemptPlan {
        private let single: Attempt?
        private var attempts: [Attempt]
        /// The prompt's block hashes when a model of the plan is routed by prompt (else
        /// empty): recorded in the ``PrefixIndex`` for each upstream the request is sent to.
        var promptBlocks: [UInt64] = []

        init(_ attempts: [Attempt]) {
            single = nil
            self.attempts = attempts
        }

        init(single: Attempt) {
            self.single = single
            attempts = []
        }

        var count: Int { single == nil ? attempts.count : 1 }
        subscript(index: Int) -> Attempt { single ?? attempts[index] }

        /// The first attempt on `upstream` tried first (nothing changes when there is none).
        mutating func moveFirst(upstream: Int) {
            guard single == nil, let index = attempts.firstIndex(where: { $0.upstream == upstream }), index > 0 else { return }
            attempts.insert(attempts.remove(at: index), at: 0)
        }

        /// Only the first attempt on `upstream` (nothing changes when there is none).
        mutating func keepOnly(upstream: Int) {
            guard single == nil, let attempt = attempts.first(where: { $0.upstream == upstream }) else { return }
            attempts = [attempt]
        }
    }

    /// Upstreams for the target in the order its routing policy gives, then those of each
    /// fallback model the key may use: a fallback is another model, and a key scoped away
    /// from it is not served by it either. With `cache_aware`, the prompt's blocks are
    /// matched against the shared ``PrefixIndex``; they are recorded there for the upstreams
    /// the request is then sent to (``recordPrompt(_:upstream:)``), not for the one routing
    /// put first: a follow-up of a stored response goes to the replica that holds it, and a
    /// request that fails over is prefilled by the next one.
    func plan(_ target: ModelRegistry.Target, for identity: ClientIdentity, body: OpenAIRequestBody, sessionID: String? = nil) -> AttemptPlan {
        // One upstream and no fallback (the usual case): nothing to order.
        if target.upstreams.count == 1 && target.fallbacks.isEmpty { return AttemptPlan(single: Attempt(target: target, upstream: target.upstreams[0])) }
        let fallbacks = target.fallbacks.filter { identity.models?.contains($0) ?? true }.compactMap { registry.configuredTarget($0) }
        var attempts: [Attempt] = []
        attempts.reserveCapacity(fallbacks.reduce(target.upstreams.count) { $0 + $1.upstreams.count })
        // Cut once, for the first model routed by prompt.
        var blocks: [UInt64]?
        // The model's own upstreams, routed; then each fallback's.
        for position in 0...fallbacks.count {
            let candidate = position == 0 ? target : fallbacks[position - 1]
            if candidate.upstreams.count == 1 {
                if position == 0 && !fallbacks.isEmpty && !segment.upstream(candidate.upstreams[0]).isWell {
                    metrics.routed(model: candidate.name, reason: .fallback, matchedShare: nil)
                }
                attempts.append(Attempt(target: candidate, upstream: candidate.upstreams[0]))
                continue
            }
            let byPrompt = picker(for: candidate.routing).needsPromptMatch
            if byPrompt && blocks == nil { blocks = Self.promptBlocks(of: body) }
            var decision = route(candidate, blocks: byPrompt ? blocks! : [], sessionID: sessionID)
            if position == 0 {
                // No upstream of the model is well: the fallback models will serve it.
                if !fallbacks.isEmpty && !segment.upstream(decision.order[0]).isWell { decision.reason = .fallback }
                metrics.routed(model: candidate.name, reason: decision.reason, matchedShare: decision.matchedShare)
            }
            for (rank, upstream) in decision.order.enumerated() {
                let prefill = rank == 0 ? decision.uncachedBlocks : decision.promptBlocks
                attempts.append(Attempt(target: candidate, upstream: upstream, prefillBlocks: UInt64(prefill), recordsPrompt: byPrompt))
            }
        }
        var plan = AttemptPlan(attempts)
        plan.promptBlocks = blocks ?? []
        return plan
    }

    /// The block hashes of the prompt of `body` (none when it has no prompt).
    static func promptBlocks(of body: OpenAIRequestBody) -> [UInt64] {
        guard let range = body.promptRange else { return [] }
        return body.bytes.withUnsafeBytes { PromptBlocks.hashes(of: UnsafeRawBufferPointer(rebasing: $0[range])) }
    }

    /// Orders the upstreams of `target` for this request by its routing policy, from the
    /// shared view every worker reads (health, breakers, in-flight counts, engine queues, the
    /// prefix index matched against `blocks`, the prompt's when the policy routes by prompt).
    func route(_ target: ModelRegistry.Target, blocks: [UInt64], sessionID: String?) -> RoutingDecision {
        let picker = picker(for: target.routing)
        let now = MonotonicInstant.now().nanoseconds / 1000
        var request = RoutingRequest(
            candidates: target.upstreams.map {
                segment.routingCandidate($0, model: target.upstreamModel, nowMicros: now, engineMaxAgeMicros: routingTuning.engineMaxAgeMicros)
            })
        if picker.needsPromptMatch {
            request.promptBlocks = blocks.count
            request.firstBlock = blocks.first
            if !blocks.isEmpty {
                let matched = segment.prefixIndex.match(blocks, clocks: segment.prefixClocks(upstreams: registry.upstreams.count))
                for i in request.candidates.indices where request.candidates[i].index < matched.count {
                    request.candidates[i].matchedBlocks = matched[request.candidates[i].index]
                }
            }
            if let sessionID, !sessionID.isEmpty {
                request.sessionKey = PromptBlocks.key(of: Array(sessionID.utf8))
            }
        } else if target.routing == .roundRobin {
            request.ticket = segment.nextRoutingTicket()
        }
        return picker.decide(request)
    }

    /// The picker of `routing` (made once, at start).
    private func picker(for routing: RoutingPolicy) -> any UpstreamPicker {
        pickers[RoutingPolicy.allCases.firstIndex(of: routing)!]
    }

    /// Records that the prompt cut into `blocks` was sent to `upstream` to prefill: what
    /// its prefix cache now holds, as far as routing can know.
    func recordPrompt(_ blocks: [UInt64], upstream: Int) {
        guard !blocks.isEmpty else { return }
        let clocks = segment.prefixClocks(upstreams: registry.upstreams.count)
        segment.prefixIndex.record(blocks, upstream: upstream, counter: segment.upstream(upstream).prefixBlockCounter, clocks: clocks)
    }

    /// What the upstream's breaker says of one more request.
    enum BreakerAdmission {
        case allow
        /// Allowed as the half-open probe: its outcome (or ``releaseProbe(_:)``) must follow.
        case probe
        /// Refused; seconds until a retry may pass.
        case reject(retryAfterSeconds: Int)
    }

    func admitThroughBreaker(_ upstream: Int) -> BreakerAdmission {
        guard breaker.enabled else { return .allow }
        let now = RequestLimiter.now()
        let admission = segment.upstream(upstream).updateBreaker {
            $0.admit(now: now, cooldown: UInt64(breaker.cooldown * 1e6), probeTimeout: UInt64(upstreamTimeout * 1e6))
        }
        switch admission {
        case .allow: return .allow
        case .probe: return .probe
        case .reject(let micros): return .reject(retryAfterSeconds: max(1, Int((micros + 999_999) / 1_000_000)))
        }
    }

    /// The half-open probe ended unjudged: the next request may probe at once.
    func releaseProbe(_ upstream: Int) {
        guard breaker.enabled else { return }
        segment.upstream(upstream).updateBreaker { ((), $0.releasingProbe()) }
    }

    func recordBreaker(_ upstream: Int, success: Bool) {
        guard breaker.enabled else { return }
        let threshold = UInt64(breaker.threshold)
        let now = success ? 0 : RequestLimiter.now()  // a success needs no time
        segment.upstream(upstream).updateBreaker { state in
            ((), success ? state.recordingSuccess() : state.recordingFailure(now: now, threshold: threshold))
        }
    }

    /// Charges the tokens an answer used to the key's token bucket: in Redis with
    /// `REDIS_URL`, else in this host's segment.
    func charge(_ identity: ClientIdentity, tokens used: Int) {
        if let sharedLimits {
            sharedLimits.charge(identity, tokens: used)
        } else {
            limiter.charge(identity, tokens: used)
        }
    }

    /// One SSE event as the client gets it (nil = drop): `model` renamed back, and the
    /// usage-only chunk dropped when only the gateway asked for it; plus its usage, if any.
    func transform(event: [UInt8], context: RelayContext) -> ([UInt8]?, TokenUsage?) {
        guard let data = SSEEventBuffer.data(of: event), data.first == UInt8(ascii: "{") else { return (event, nil) }
        let family = context.family
        let usage = TokenUsage.find(in: data, keys: family.usage)
        if family.asksForStreamUsage && usage != nil && !context.clientWantsUsage && TokenUsage.isUsageOnlyChunk(data) { return (nil, usage) }
        guard context.clientModel != context.upstreamModel else { return (event, usage) }
        // Named events (`event: response.created`) keep their name.
        let renamed = JSONSplice.replacingModel(in: data, with: context.clientModel, container: family.eventContainer)
        return (SSEEventBuffer.otherLines(of: event) + Array("data: ".utf8) + renamed + [0x0A, 0x0A], usage)
    }

    /// Charges and counts `reported`; `soFar` is the whole stream's usage when `reported` is
    /// what one event added to it (the access line shows the whole).
    func account(_ reported: TokenUsage, context: RelayContext, writer: ResponseWriter, soFar: TokenUsage? = nil) {
        let (usage, wasClamped) = reported.clamped
        if wasClamped {
            logger.warning(
                "upstream reported implausible usage; counted as \(TokenUsage.plausibleMaximum) tokens at most",
                metadata: [
                    "upstream": "\(context.upstream)", "prompt_tokens": "\(reported.prompt)", "completion_tokens": "\(reported.completion)",
                ])
        }
        metrics.tokens(model: context.modelLabel, prompt: usage.prompt, completion: usage.completion)
        charge(context.identity, tokens: usage.total)
        let whole = soFar?.clamped.usage ?? usage
        writer.request.logFields.promptTokens = whole.prompt
        writer.request.logFields.completionTokens = whole.completion
    }
}
