import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import Shared

/// Forwards `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` to the model's
/// upstream: least in-flight upstream first (skipping open breakers), then the model's
/// fallbacks, moving on only while no byte has reached the client. Streams pass through
/// event by event; usage is always requested upstream (for token limits and metrics) and
/// the extra usage chunk is removed again when the client did not ask for it.
struct ProxyHandler: Sendable {
    let registry: ModelRegistry
    let client: UpstreamClient
    let segment: SharedSegment
    let slot: WorkerSlot
    let demo: DemoModel
    let limiter: RequestLimiter
    let metrics: GatewayMetrics
    let breaker: GatewayConfiguration.CircuitBreaker
    let upstreamTimeout: Double
    let logger: Logger

    /// Largest non-streamed upstream response accepted.
    static let maxResponseBytes = 64 << 20

    /// One upstream to try.
    struct Attempt {
        var target: ModelRegistry.Target
        var upstream: Int
    }

    func handle(_ request: GatewayRequest, identity: ClientIdentity, writer: ResponseWriter) async {
        let body: OpenAIRequestBody
        do {
            body = try OpenAIRequestBody(bytes: Array(buffer: request.body))
        } catch let error as GatewayError {
            await writer.send(error: error)
            return
        } catch {
            await writer.send(error: .badRequest("Invalid request body."))
            return
        }
        guard let modelName = body.model, !modelName.isEmpty else {
            await writer.send(error: .badRequest("You must provide a model parameter.", param: "model", code: "missing_model"))
            return
        }
        guard let target = registry.resolve(modelName, segment: segment) else {
            await writer.send(error: .modelNotFound(modelName))
            return
        }
        if let allowed = identity.models, !allowed.contains(target.name) {
            await writer.send(error: .forbidden(model: modelName))
            return
        }
        writer.logFields["model"] = target.configured ? target.name : "other"
        if request.route == .chatCompletions, target.configured,
            let refusal = ToolCallResponseNormalizer.preflight(body: body, parserName: target.toolParser)
        {
            await writer.send(error: refusal)
            return
        }

        let admission = limiter.admit(identity)
        writer.extraHeaders = admission.headers
        if let refusal = admission.refusal {
            metrics.rateLimited(refusal)
            let message =
                switch refusal {
                case .requests: "Rate limit reached for requests per minute (\(identity.requestsPerMinute)) of this key."
                case .tokens: "Rate limit reached for tokens per minute (\(identity.tokensPerMinute)) of this key."
                case .tableFull: "Too many distinct keys are active; try again shortly."
                }
            await writer.send(error: .rateLimited(message, retryAfterSeconds: admission.retryAfterSeconds))
            return
        }

        let attempts = plan(target)
        var lastError = GatewayError.unavailable("No upstream is available for model '\(modelName)'.", retryAfterSeconds: 1)
        for (number, attempt) in attempts.enumerated() {
            let isLast = number == attempts.count - 1
            let upstream = registry.upstreams[attempt.upstream]
            writer.logFields["upstream"] = upstream.name
            if upstream.isDemo {
                await demo.respond(route: request.route, body: body, clientModel: modelName, writer: writer)
                metrics.upstream(model: target.name, upstream: attempt.upstream, outcome: .success)
                return
            }
            if let retryAfter = admitThroughBreaker(attempt.upstream) {
                metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .rejected)
                lastError = .unavailable(
                    "Upstream \(upstream.name) is failing; its circuit breaker is open.", retryAfterSeconds: retryAfter, code: "circuit_open")
                continue
            }
            let outcome = await forward(request, body: body, attempt: attempt, clientModel: modelName, identity: identity, writer: writer, isLast: isLast)
            switch outcome {
            case .done:
                return
            case .retry(let error):
                lastError = error
                if Task.isCancelled { return }
            }
        }
        await writer.send(error: lastError)
    }

    /// Upstreams for the target (healthy and closed-breaker ones by least in-flight, the
    /// rest last), then the same for each fallback model.
    func plan(_ target: ModelRegistry.Target) -> [Attempt] {
        var attempts: [Attempt] = []
        for candidate in [target] + target.fallbacks.compactMap({ registry.configuredTarget($0) }) {
            let ordered = candidate.upstreams.map { index -> (Int, Int, UInt64) in
                let status = segment.upstream(index)
                let unwell = status.health == .down || status.breaker.phase != .closed
                return (index, unwell ? 1 : 0, segment.inflightRequests(upstream: index))
            }.sorted { ($0.1, $0.2) < ($1.1, $1.2) }
            attempts += ordered.map { Attempt(target: candidate, upstream: $0.0) }
        }
        return attempts
    }

    /// nil when the breaker lets the request through; else seconds until it may.
    private func admitThroughBreaker(_ upstream: Int) -> Int? {
        guard breaker.enabled else { return nil }
        let now = RequestLimiter.now()
        let admission = segment.upstream(upstream).updateBreaker {
            $0.admit(now: now, cooldown: UInt64(breaker.cooldown * 1e6), probeTimeout: UInt64(upstreamTimeout * 1e6))
        }
        if case .reject(let micros) = admission { return max(1, Int((micros + 999_999) / 1_000_000)) }
        return nil
    }

    private func recordBreaker(_ upstream: Int, success: Bool) {
        guard breaker.enabled else { return }
        let now = RequestLimiter.now()
        let threshold = UInt64(breaker.threshold)
        segment.upstream(upstream).updateBreaker { state in
            ((), success ? state.recordingSuccess() : state.recordingFailure(now: now, threshold: threshold))
        }
    }

    enum Outcome {
        case done
        /// Nothing reached the client; the next attempt may answer instead.
        case retry(GatewayError)
    }

    private func forward(
        _ request: GatewayRequest, body: OpenAIRequestBody, attempt: Attempt, clientModel: String,
        identity: ClientIdentity, writer: ResponseWriter, isLast: Bool
    ) async -> Outcome {
        let upstream = registry.upstreams[attempt.upstream]
        var upstreamRequest = HTTPClientRequest(url: upstream.url + request.route.template)
        upstreamRequest.method = .POST
        upstreamRequest.headers.add(name: "content-type", value: "application/json")
        upstreamRequest.headers.add(name: "accept", value: body.stream ? "text/event-stream" : "application/json")
        upstreamRequest.headers.add(name: "x-request-id", value: request.requestID)
        if let authorization = client.authorization[attempt.upstream] {
            upstreamRequest.headers.add(name: "authorization", value: authorization)
        }
        let forwarded = body.forwarding(model: attempt.target.upstreamModel, addIncludeUsage: body.stream)
        upstreamRequest.body = .bytes(ByteBuffer(bytes: forwarded))

        slot.requestStarted(upstream: attempt.upstream)
        defer { slot.requestEnded(upstream: attempt.upstream) }
        let sent = MonotonicInstant.now()

        let response: HTTPClientResponse
        do {
            response = try await client.execute(upstreamRequest, upstream: attempt.upstream)
        } catch {
            if Task.isCancelled { return .done }
            let failure = UpstreamClient.classify(error)
            recordBreaker(attempt.upstream, success: false)
            logger.warning(
                "upstream request failed",
                metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)", "error": "\(failure)"])
            switch failure {
            case .unreachable(let why):
                metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .unavailable)
                return .retry(.unavailable("Upstream \(upstream.name) is unreachable (\(why)).", retryAfterSeconds: 2))
            case .timeout:
                metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .timeout)
                return .retry(.gatewayTimeout("Upstream \(upstream.name) did not answer in time."))
            case .failed:
                metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .error)
                return .retry(.badGateway("Upstream \(upstream.name) failed before answering."))
            }
        }

        let status = Int(response.status.code)
        if status >= 500 {
            recordBreaker(attempt.upstream, success: false)
            metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .error)
            if !isLast {
                logger.warning(
                    "upstream answered \(status); trying the next", metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)"])
                return .retry(.badGateway("Upstream \(upstream.name) answered \(status)."))
            }
        } else {
            // The upstream answered: that is what a (half-open) breaker needs to know, now,
            // not when a long stream ends.
            recordBreaker(attempt.upstream, success: true)
        }
        let isEventStream = response.headers.first(name: "content-type")?.lowercased().hasPrefix("text/event-stream") ?? false
        let context = RelayContext(
            clientModel: clientModel, upstreamModel: attempt.target.upstreamModel, modelLabel: attempt.target.name,
            upstream: upstream.name, upstreamIndex: attempt.upstream, identity: identity, sent: sent,
            clientWantsUsage: body.includeUsage, promptEstimate: body.bytes.count / 4,
            toolParser: request.route == .chatCompletions
                ? ToolCallResponseNormalizer.responseParser(body: body, parserName: attempt.target.toolParser) : nil)
        let healthy: Bool
        if body.stream && (200..<300).contains(status) && isEventStream {
            healthy = await relayStream(response, context: context, writer: writer)
        } else {
            healthy = await relayWhole(response, context: context, writer: writer)
        }
        if status < 500 {
            if !healthy { recordBreaker(attempt.upstream, success: false) }
            metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: healthy ? .success : .error)
        }
        return .done
    }

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
    }

    /// A non-streamed answer (or any error answer): read it, give `model` back its client
    /// name, count its usage, pass status and body on. False when the upstream broke off.
    private func relayWhole(_ response: HTTPClientResponse, context: RelayContext, writer: ResponseWriter) async -> Bool {
        let status = Int(response.status.code)
        do {
            let buffer = try await response.body.collect(upTo: Self.maxResponseBytes)
            var bytes = Array(buffer: buffer)
            if (200..<300).contains(status) {
                if context.clientModel != context.upstreamModel {
                    bytes = JSONSplice.replacingModel(in: bytes, with: context.clientModel)
                }
                if let usage = TokenUsage.find(in: bytes) { account(usage, context: context, writer: writer) }
                if let parser = context.toolParser { bytes = ToolCallResponseNormalizer.normalizeCompletion(bytes, parser: parser) }
            }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: response.headers.first(name: "content-type") ?? "application/json")
            // The upstream's own error body is passed on; its 500 becomes the gateway's 502.
            let clientStatus = status >= 500 && !(502...504).contains(status) ? 502 : status
            await writer.send(status: clientStatus, headers: headers, body: ByteBuffer(bytes: bytes))
            return true
        } catch {
            if Task.isCancelled { return true }
            await writer.send(error: .badGateway("Upstream \(context.upstream) broke off its answer."))
            return false
        }
    }

    /// A streamed answer: each SSE event is written (and flushed) as soon as it is whole;
    /// the write waits while the client is slow, which stops reading from the upstream.
    /// False when the upstream broke off mid-stream.
    private func relayStream(_ response: HTTPClientResponse, context: RelayContext, writer: ResponseWriter) async -> Bool {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream; charset=utf-8")
        headers.add(name: "cache-control", value: "no-cache")
        headers.add(name: "x-accel-buffering", value: "no")
        do {
            try await writer.writeHead(status: 200, headers: headers)
        } catch {
            return true
        }
        var events = SSEEventBuffer()
        var tools = context.toolParser.map { ToolCallStreamNormalizer(parser: $0) }
        var firstEvent = true
        var usageSeen = false
        var streamedEvents = 0
        defer {
            // A stream that ended without usage (the client hung up, the upstream broke
            // off) is still charged: ~1 token per streamed event, plus the prompt.
            if !usageSeen {
                limiter.charge(context.identity, tokens: context.promptEstimate + streamedEvents)
            }
        }
        do {
            for try await chunk in response.body {
                for event in events.append(chunk.readableBytesView) {
                    if firstEvent {
                        firstEvent = false
                        metrics.timeToFirstToken(model: context.modelLabel, seconds: MonotonicInstant.now().seconds(since: context.sent))
                    }
                    streamedEvents += 1
                    let (transformed, usage) = transform(event: event, context: context)
                    if let usage {
                        usageSeen = true
                        account(usage, context: context, writer: writer)
                    }
                    if let out = transformed {
                        for piece in tools?.transform(event: out) ?? [out] { try await writer.write(ByteBuffer(bytes: piece)) }
                    }
                }
            }
            for piece in tools?.finish() ?? [] { try await writer.write(ByteBuffer(bytes: piece)) }
            let rest = events.finish()
            if !rest.isEmpty { try await writer.write(ByteBuffer(bytes: rest)) }
            try await writer.end()
            return true
        } catch {
            if Task.isCancelled { return true }
            // The upstream broke off mid-stream: end the stream in a way SDKs understand.
            logger.warning("upstream stream failed", metadata: ["request_id": "\(writer.requestID)", "upstream": "\(context.upstream)", "error": "\(error)"])
            let error = GatewayError.badGateway("Upstream \(context.upstream) broke off the stream.")
            writer.logFields["error"] = "upstream_stream_error"
            for piece in tools?.finish() ?? [] { try? await writer.write(ByteBuffer(bytes: piece)) }
            let tail = "data: \(error.jsonBody)\n\ndata: [DONE]\n\n"
            try? await writer.write(ByteBuffer(string: tail))
            try? await writer.end()
            return false
        }
    }

    /// One SSE event as the client gets it (nil = drop): `model` renamed back, and the
    /// usage-only chunk dropped when only the gateway asked for it; plus its usage, if any.
    func transform(event: [UInt8], context: RelayContext) -> ([UInt8]?, TokenUsage?) {
        guard let data = SSEEventBuffer.data(of: event), data.first == UInt8(ascii: "{") else { return (event, nil) }
        let usage = TokenUsage.find(in: data)
        if usage != nil && !context.clientWantsUsage && TokenUsage.isUsageOnlyChunk(data) { return (nil, usage) }
        guard context.clientModel != context.upstreamModel else { return (event, usage) }
        return (Array("data: ".utf8) + JSONSplice.replacingModel(in: data, with: context.clientModel) + [0x0A, 0x0A], usage)
    }

    private func account(_ usage: TokenUsage, context: RelayContext, writer: ResponseWriter) {
        metrics.tokens(model: context.modelLabel, prompt: usage.prompt, completion: usage.completion)
        limiter.charge(context.identity, tokens: usage.total)
        writer.logFields["prompt_tokens"] = String(usage.prompt)
        writer.logFields["completion_tokens"] = String(usage.completion)
    }
}
