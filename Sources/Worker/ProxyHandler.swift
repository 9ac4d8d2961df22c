import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import Shared

/// Forwards `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` to the model's
/// upstream: least in-flight upstream first, then the model's fallbacks, moving on only
/// while no byte has reached the client. Streams pass through event by event.
struct ProxyHandler: Sendable {
    let registry: ModelRegistry
    let client: UpstreamClient
    let segment: SharedSegment
    let slot: WorkerSlot
    let demo: DemoModel
    let logger: Logger

    /// Largest non-streamed upstream response accepted.
    static let maxResponseBytes = 64 << 20

    /// One upstream to try.
    struct Attempt {
        var target: ModelRegistry.Target
        var upstream: Int
    }

    func handle(_ request: GatewayRequest, writer: ResponseWriter) async {
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
        writer.logFields["model"] = target.configured ? target.name : "other"
        let attempts = plan(target)
        var lastError = GatewayError.unavailable("No upstream is available for model '\(modelName)'.", retryAfterSeconds: 1)
        for (number, attempt) in attempts.enumerated() {
            let isLast = number == attempts.count - 1
            let upstream = registry.upstreams[attempt.upstream]
            writer.logFields["upstream"] = upstream.name
            if upstream.isDemo {
                await demo.respond(route: request.route, body: body, clientModel: modelName, writer: writer)
                return
            }
            switch await forward(request, body: body, attempt: attempt, clientModel: modelName, writer: writer, isLast: isLast) {
            case .done:
                return
            case .retry(let error):
                lastError = error
                if Task.isCancelled { return }
            }
        }
        await writer.send(error: lastError)
    }

    /// Upstreams for the target (healthy ones by least in-flight, down ones last), then
    /// the same for each fallback model.
    func plan(_ target: ModelRegistry.Target) -> [Attempt] {
        var attempts: [Attempt] = []
        for candidate in [target] + target.fallbacks.compactMap({ registry.configuredTarget($0) }) {
            let ordered = candidate.upstreams.map { index in
                (index, segment.upstream(index).health == .down ? 1 : 0, segment.inflightRequests(upstream: index))
            }.sorted { ($0.1, $0.2) < ($1.1, $1.2) }
            attempts += ordered.map { Attempt(target: candidate, upstream: $0.0) }
        }
        return attempts
    }

    enum Outcome {
        case done
        /// Nothing reached the client; the next attempt may answer instead.
        case retry(GatewayError)
    }

    private func forward(
        _ request: GatewayRequest, body: OpenAIRequestBody, attempt: Attempt, clientModel: String,
        writer: ResponseWriter, isLast: Bool
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
        let forwarded = body.forwarding(model: attempt.target.upstreamModel)
        upstreamRequest.body = .bytes(ByteBuffer(bytes: forwarded))

        slot.requestStarted(upstream: attempt.upstream)
        defer { slot.requestEnded(upstream: attempt.upstream) }

        let response: HTTPClientResponse
        do {
            response = try await client.http.execute(upstreamRequest, timeout: client.headersTimeout)
        } catch {
            if Task.isCancelled { return .done }
            let failure = UpstreamClient.classify(error)
            logger.warning(
                "upstream request failed",
                metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)", "error": "\(failure)"])
            switch failure {
            case .unreachable(let why):
                return .retry(.unavailable("Upstream \(upstream.name) is unreachable (\(why)).", retryAfterSeconds: 2))
            case .timeout:
                return .retry(.gatewayTimeout("Upstream \(upstream.name) did not answer in time."))
            case .failed:
                return .retry(.badGateway("Upstream \(upstream.name) failed before answering."))
            }
        }

        let status = Int(response.status.code)
        if status >= 500 && !isLast {
            logger.warning("upstream answered \(status); trying the next", metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)"])
            return .retry(.badGateway("Upstream \(upstream.name) answered \(status)."))
        }
        let isEventStream = response.headers.first(name: "content-type")?.lowercased().hasPrefix("text/event-stream") ?? false
        if body.stream && (200..<300).contains(status) && isEventStream {
            await relayStream(response, clientModel: clientModel, upstreamModel: attempt.target.upstreamModel, upstream: upstream.name, writer: writer)
        } else {
            await relayWhole(response, clientModel: clientModel, upstream: upstream.name, writer: writer)
        }
        return .done
    }

    /// A non-streamed answer (or any error answer): read it, give `model` back its client
    /// name, pass status and body on.
    private func relayWhole(_ response: HTTPClientResponse, clientModel: String, upstream: String, writer: ResponseWriter) async {
        let status = Int(response.status.code)
        do {
            let buffer = try await response.body.collect(upTo: Self.maxResponseBytes)
            var bytes = Array(buffer: buffer)
            if (200..<300).contains(status) {
                bytes = JSONSplice.replacingModel(in: bytes, with: clientModel)
            }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: response.headers.first(name: "content-type") ?? "application/json")
            await writer.send(status: status, headers: headers, body: ByteBuffer(bytes: bytes))
        } catch {
            if Task.isCancelled { return }
            await writer.send(error: .badGateway("Upstream \(upstream) broke off its answer."))
        }
    }

    /// A streamed answer: each SSE event is written (and flushed) as soon as it is whole;
    /// the write waits while the client is slow, which stops reading from the upstream.
    private func relayStream(
        _ response: HTTPClientResponse, clientModel: String, upstreamModel: String, upstream: String, writer: ResponseWriter
    ) async {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream; charset=utf-8")
        headers.add(name: "cache-control", value: "no-cache")
        headers.add(name: "x-accel-buffering", value: "no")
        do {
            try await writer.writeHead(status: 200, headers: headers)
        } catch {
            return
        }
        var events = SSEEventBuffer()
        let rewrite = clientModel != upstreamModel
        do {
            for try await chunk in response.body {
                if !rewrite {
                    // Same name on both sides: bytes pass through untouched, as they come.
                    try await writer.write(chunk)
                    continue
                }
                for event in events.append(chunk.readableBytesView) {
                    try await writer.write(ByteBuffer(bytes: Self.rewritingModel(event: event, to: clientModel)))
                }
            }
            let rest = events.finish()
            if !rest.isEmpty { try await writer.write(ByteBuffer(bytes: rest)) }
            try await writer.end()
        } catch {
            if Task.isCancelled { return }
            // The upstream broke off mid-stream: end the stream in a way SDKs understand.
            logger.warning("upstream stream failed", metadata: ["request_id": "\(writer.requestID)", "upstream": "\(upstream)", "error": "\(error)"])
            let error = GatewayError.badGateway("Upstream \(upstream) broke off the stream.")
            writer.logFields["error"] = "upstream_stream_error"
            let tail = "data: \(error.jsonBody)\n\ndata: [DONE]\n\n"
            try? await writer.write(ByteBuffer(string: tail))
            try? await writer.end()
        }
    }

    /// An SSE event with the `model` of its JSON data set to `name`.
    static func rewritingModel(event: [UInt8], to name: String) -> [UInt8] {
        guard let data = SSEEventBuffer.data(of: event), data.first == UInt8(ascii: "{") else { return event }
        let rewritten = JSONSplice.replacingModel(in: data, with: name)
        if rewritten.count == data.count && rewritten == data { return event }
        return Array("data: ".utf8) + rewritten + [0x0A, 0x0A]
    }
}
