import Logging
import NIOCore
import NIOHTTP1
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

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
}

/// One proxied request on its way through the planned upstream attempts, driven by
/// callbacks on the worker's event loop: a new connection's connect, the upstream connection's
/// reads, the client's writability and hang-up. No task, no lock: the client connection
/// and the upstream connection share the loop.
///
/// An attempt fails over to the next one only while nothing has reached the client:
/// connect failures, timeouts before the head, and 5xx heads (except on the last attempt,
/// whose error answer is passed on). A streamed answer is relayed event by event; when
/// the client cannot take more, reading from the upstream stops until it can.
final class ProxyExchange: UpstreamResponseHandling {
    private let proxy: ProxyHandler
    private let request: GatewayRequest
    private let body: OpenAIRequestBody
    private let clientModel: String
    private let identity: ClientIdentity
    private let writer: ResponseWriter
    private let attempts: ProxyHandler.AttemptPlan

    private var next = 0
    /// Why the last attempt failed; nil while none has (the error is built only if sent).
    private var lastError: GatewayError?
    private var attempt: ProxyHandler.Attempt?
    private var isLastAttempt = false
    private var connection: UpstreamConnection?
    private var countedInFlight: Int?
    /// When the request left for the upstream (set by each attempt's send).
    private var sent = MonotonicInstant(nanoseconds: 0)
    private var retriedStaleConnection = false
    private var cancelled = false

    private enum Phase {
        case idle
        case awaitingHead
        case whole(status: Int, contentType: String?, body: ByteBuffer?)
        case streaming
        case done
    }

    private var phase = Phase.idle
    private var relay: RelayContext?
    // Streaming state.
    private var events = SSEEventBuffer()
    private var tools: ToolCallStreamNormalizer?
    private var firstEvent = true
    private var usageSeen = false
    private var streamedEvents = 0

    init(
        proxy: ProxyHandler, request: GatewayRequest, body: OpenAIRequestBody, clientModel: String, identity: ClientIdentity,
        writer: ResponseWriter, attempts: ProxyHandler.AttemptPlan
    ) {
        self.proxy = proxy
        self.request = request
        self.body = body
        self.clientModel = clientModel
        self.identity = identity
        self.writer = writer
        self.attempts = attempts
    }

    func start() {
        writer.onClientGone = { [self] in clientGone() }
        tryNextAttempt()
    }

    // MARK: Attempts

    private func tryNextAttempt() {
        while !cancelled && next < attempts.count {
            let attempt = attempts[next]
            next += 1
            let upstream = proxy.registry.upstreams[attempt.upstream]
            writer.logFields.upstream = upstream.name
            if upstream.isDemo {
                phase = .done
                proxy.demo.respond(route: request.route, body: body, clientModel: clientModel, writer: writer)
                proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .success)
                return
            }
            if let retryAfter = proxy.admitThroughBreaker(attempt.upstream) {
                proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .rejected)
                lastError = .unavailable(
                    "Upstream \(upstream.name) is failing; its circuit breaker is open.", retryAfterSeconds: retryAfter, code: "circuit_open")
                continue
            }
            guard let pool = proxy.upstreams[attempt.upstream] else { continue }
            self.attempt = attempt
            isLastAttempt = next == attempts.count
            retriedStaleConnection = false
            send(to: pool, forceNew: false)
            return
        }
        guard !cancelled else { return }
        phase = .done
        writer.send(error: lastError ?? .unavailable("No upstream is available for model '\(clientModel)'.", retryAfterSeconds: 1))
    }

    private func send(to pool: UpstreamPool, forceNew: Bool) {
        guard let attempt else { return }
        proxy.slot.requestStarted(upstream: attempt.upstream)
        countedInFlight = attempt.upstream
        sent = .now()
        phase = .awaitingHead
        // A kept-alive connection (the usual case) is taken at once; `forceNew` skips the
        // idle ones (after one turned out stale). `sent` and NIO's deadlines both read
        // CLOCK_MONOTONIC: the pool's age check reuses this reading.
        if !forceNew, let idle = pool.takeIdle(now: .uptimeNanoseconds(sent.nanoseconds)) {
            leased(idle, pool: pool, attempt: attempt, reused: true)
            return
        }
        pool.connect { [self] result in
            guard !cancelled else {
                if case .success(let connection) = result { connection.abandon() }
                return
            }
            switch result {
            case .success(let connection):
                leased(connection, pool: pool, attempt: attempt, reused: false)
            case .failure(let failure):
                upstreamFailed(failure)
            }
        }
    }

    private func leased(_ connection: UpstreamConnection, pool: UpstreamPool, attempt: ProxyHandler.Attempt, reused: Bool) {
        self.connection = connection
        connection.send(upstreamRequest(pool: pool), body: forwardedBody(attempt), to: self, reused: reused)
    }

    private func upstreamRequest(pool: UpstreamPool) -> UpstreamRequest {
        UpstreamRequest(
            pathPrefix: pool.url.pathPrefix, route: request.route.template, host: pool.hostHeader, acceptsEventStream: body.stream,
            requestID: request.requestID, authorization: pool.authorization)
    }

    private func forwardedBody(_ attempt: ProxyHandler.Attempt) -> ByteBuffer {
        if attempt.target.upstreamModel == body.model && !body.stream {
            return request.body  // nothing to change: send the client's bytes as they are
        }
        return ByteBuffer(bytes: body.forwarding(model: attempt.target.upstreamModel, addIncludeUsage: body.stream))
    }

    /// The attempt is over: it no longer counts as in flight on its upstream.
    private func endAttempt() {
        connection = nil
        if let upstream = countedInFlight {
            countedInFlight = nil
            proxy.slot.requestEnded(upstream: upstream)
        }
    }

    private func clientGone() {
        cancelled = true
        connection?.abandon()
        if case .streaming = phase {
            chargeUnreportedStream()
            recordOutcome(healthy: true)
        } else if case .whole(let status, _, _) = phase, status < 500 {
            recordOutcome(healthy: true)
        }
        phase = .done
        endAttempt()
    }

    /// Breaker and metrics for an answer that started (status below 500).
    private func recordOutcome(healthy: Bool) {
        guard let attempt else { return }
        if !healthy { proxy.recordBreaker(attempt.upstream, success: false) }
        proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: healthy ? .success : .error)
    }

    // MARK: UpstreamResponseHandling

    func upstreamHead(_ head: UpstreamResponseHead) {
        guard case .awaitingHead = phase, let attempt else { return }
        let upstream = proxy.registry.upstreams[attempt.upstream]
        let status = head.status
        if status >= 500 {
            proxy.recordBreaker(attempt.upstream, success: false)
            proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .error)
            if !isLastAttempt {
                proxy.logger.warning(
                    "upstream answered \(status); trying the next", metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)"])
                lastError = .badGateway("Upstream \(upstream.name) answered \(status).")
                connection?.abandon()
                endAttempt()
                tryNextAttempt()
                return
            }
        } else {
            // The upstream answered: that is what a (half-open) breaker needs to know, now,
            // not when a long stream ends.
            proxy.recordBreaker(attempt.upstream, success: true)
        }
        let contentType = head.contentType
        let isEventStream = contentType.map { Self.isEventStream($0) } ?? false
        relay = RelayContext(
            clientModel: clientModel, upstreamModel: attempt.target.upstreamModel, modelLabel: attempt.target.name,
            upstream: upstream.name, upstreamIndex: attempt.upstream, identity: identity, sent: sent,
            clientWantsUsage: body.includeUsage, promptEstimate: body.bytes.count / 4,
            toolParser: request.route == .chatCompletions
                ? ToolCallResponseNormalizer.responseParser(body: body, parserName: attempt.target.toolParser) : nil)
        if body.stream && (200..<300).contains(status) && isEventStream {
            phase = .streaming
            tools = relay?.toolParser.map { ToolCallStreamNormalizer(parser: $0) }
            writer.writeEventStreamHead()
            writer.onWritable = { [weak self] in self?.connection?.resumeReading() }
        } else {
            phase = .whole(status: status, contentType: contentType, body: nil)
        }
    }

    func upstreamBody(_ buffer: ByteBuffer) {
        switch phase {
        case .whole(let status, let contentType, let collected):
            var collected = collected
            if collected == nil {
                collected = buffer
            } else {
                var buffer = buffer
                phase = .idle  // drop the reference while appending, so the buffer is not copied
                collected!.writeBuffer(&buffer)
            }
            phase = .whole(status: status, contentType: contentType, body: collected)
            if collected!.readableBytes > ProxyHandler.maxResponseBytes {
                connection?.abandon()
                endAttempt()
                phase = .done
                writer.send(error: .badGateway("Upstream \(relay?.upstream ?? "") sent an answer larger than \(ProxyHandler.maxResponseBytes) bytes."))
                recordOutcome(healthy: false)
            }
        case .streaming:
            relayEvents(buffer)
        default:
            break
        }
    }

    func upstreamReadComplete() {
        if case .streaming = phase { writer.flush() }
    }

    func upstreamEnd() {
        switch phase {
        case .whole(let status, let contentType, let collected):
            phase = .done
            endAttempt()
            sendWhole(status: status, contentType: contentType, body: collected ?? ByteBuffer())
            if status < 500 { recordOutcome(healthy: true) }
        case .streaming:
            phase = .done
            endAttempt()
            for piece in tools?.finish() ?? [] { writer.write(ByteBuffer(bytes: piece)) }
            let rest = events.finish()
            if !rest.isEmpty { writer.write(ByteBuffer(bytes: rest)) }
            chargeUnreportedStream()
            writer.end()
            recordOutcome(healthy: true)
        default:
            endAttempt()
        }
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        guard !cancelled, let attempt else { return }
        let upstream = proxy.registry.upstreams[attempt.upstream]
        switch phase {
        case .awaitingHead:
            endAttempt()
            if failure == .staleConnection, !retriedStaleConnection, let pool = proxy.upstreams[attempt.upstream] {
                retriedStaleConnection = true
                send(to: pool, forceNew: true)
                return
            }
            proxy.recordBreaker(attempt.upstream, success: false)
            proxy.logger.warning(
                "upstream request failed",
                metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)", "error": "\(failure)"])
            switch failure {
            case .unreachable(let why):
                proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .unavailable)
                lastError = .unavailable("Upstream \(upstream.name) is unreachable (\(why)).", retryAfterSeconds: 2)
            case .timeout:
                proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .timeout)
                lastError = .gatewayTimeout("Upstream \(upstream.name) did not answer in time.")
            case .failed, .staleConnection:
                proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .error)
                lastError = .badGateway("Upstream \(upstream.name) failed before answering.")
            }
            tryNextAttempt()
        case .whole(let status, _, _):
            phase = .done
            endAttempt()
            writer.send(error: .badGateway("Upstream \(upstream.name) broke off its answer."))
            if status < 500 { recordOutcome(healthy: false) }
        case .streaming:
            phase = .done
            endAttempt()
            // The upstream broke off mid-stream: end the stream in a way SDKs understand.
            proxy.logger.warning(
                "upstream stream failed", metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)", "error": "\(failure)"])
            let error = GatewayError.badGateway("Upstream \(upstream.name) broke off the stream.")
            writer.logFields.error = "upstream_stream_error"
            for piece in tools?.finish() ?? [] { writer.write(ByteBuffer(bytes: piece)) }
            writer.write(ByteBuffer(string: "data: \(error.jsonBody)\n\ndata: [DONE]\n\n"))
            chargeUnreportedStream()
            writer.end()
            recordOutcome(healthy: false)
        case .idle, .done:
            endAttempt()
        }
    }

    // MARK: Relaying

    /// `text/event-stream` (any case, parameters or not), read without a lowercased copy.
    static func isEventStream(_ contentType: String) -> Bool {
        let utf8 = contentType.utf8
        let type = "text/event-stream".utf8
        return utf8.count >= type.count && zip(utf8, type).allSatisfy { ($0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0) == $1 }
    }

    /// A non-streamed answer (or any error answer): `model` gets its client name back, usage
    /// is counted, the status and body are passed on (an upstream 500 becomes 502).
    private func sendWhole(status: Int, contentType: String?, body buffer: ByteBuffer) {
        var out = buffer
        if (200..<300).contains(status), let relay {
            if let usage = buffer.withUnsafeReadableBytes({ TokenUsage.find(in: $0) }) {
                proxy.account(usage, context: relay, writer: writer)
            }
            if relay.clientModel != relay.upstreamModel || relay.toolParser != nil {
                var bytes = Array(buffer: buffer)
                if relay.clientModel != relay.upstreamModel {
                    bytes = JSONSplice.replacingModel(in: bytes, with: relay.clientModel)
                }
                if let parser = relay.toolParser {
                    bytes = ToolCallResponseNormalizer.normalizeCompletion(bytes, parser: parser)
                }
                out = ByteBuffer(bytes: bytes)
            }
        }
        let clientStatus = status >= 500 && !(502...504).contains(status) ? 502 : status
        writer.send(status: clientStatus, contentType: contentType ?? "application/json", body: out)
    }

    /// Writes each whole SSE event of `buffer` (flushed when the read burst ends); stops
    /// reading from the upstream while the client's socket is full.
    private func relayEvents(_ buffer: ByteBuffer) {
        guard let relay else { return }
        if tools == nil, relay.clientModel == relay.upstreamModel, events.pendingCount == 0,
            let count = Self.wholeEventsWithoutUsage(buffer)
        {
            // Nothing to rename, normalise or account in this read: pass it on as it is.
            if firstEvent {
                firstEvent = false
                proxy.metrics.timeToFirstToken(model: relay.modelLabel, seconds: MonotonicInstant.now().seconds(since: relay.sent))
            }
            streamedEvents += count
            writer.write(buffer)
        } else {
            relayEachEvent(buffer, relay: relay)
        }
        if !writer.isWritable {
            // Flushing may drain enough to be writable again at once (the event for that
            // fired before the pause): pause only if the client is still behind.
            writer.flush()
            if !writer.isWritable { connection?.pauseReading() }
        }
    }

    /// The number of events in `buffer` when it holds whole events only (it ends with a
    /// blank line) and none of them mentions `"usage"`; else nil. The common read of a
    /// stream: one or a few token chunks.
    static func wholeEventsWithoutUsage(_ buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { raw -> Int? in
            guard raw.count >= 2, raw[raw.count - 1] == 0x0A, raw[raw.count - 2] == 0x0A, !TokenUsage.mentionsUsage(raw) else {
                return nil
            }
            return countBlankLines(raw)
        }
    }

    /// The line feeds whose previous byte other than CR is a line feed: the ends of the
    /// events (`"\n\n"`, and `"\r\n\r\n"` too). `memchr` jumps from one line feed to the
    /// next; only the bytes just before each are looked at.
    static func countBlankLines(_ raw: UnsafeRawBufferPointer) -> Int {
        guard let base = raw.baseAddress else { return 0 }
        var count = 0
        var i = 0
        while i < raw.count, let found = memchr(base + i, 0x0A, raw.count - i) {
            let lf = base.distance(to: UnsafeRawPointer(found))
            var before = lf - 1
            while before >= i, raw[before] == 0x0D { before -= 1 }
            if before >= 0, raw[before] == 0x0A { count += 1 }
            i = lf + 1
        }
        return count
    }

    /// The general path: split into events, rename `model`, account usage, drop the
    /// usage-only chunk the client did not ask for, normalise tool calls.
    private func relayEachEvent(_ buffer: ByteBuffer, relay: RelayContext) {
        for event in events.append(buffer.readableBytesView) {
            if firstEvent {
                firstEvent = false
                proxy.metrics.timeToFirstToken(model: relay.modelLabel, seconds: MonotonicInstant.now().seconds(since: relay.sent))
            }
            streamedEvents += 1
            let (transformed, usage) = proxy.transform(event: event, context: relay)
            if let usage {
                usageSeen = true
                proxy.account(usage, context: relay, writer: writer)
            }
            if let out = transformed {
                if tools == nil {
                    writer.write(ByteBuffer(bytes: out))
                } else {
                    for piece in tools!.transform(event: out) { writer.write(ByteBuffer(bytes: piece)) }
                }
            }
        }
    }

    /// A stream that ended without usage (the client hung up, the upstream broke off) is
    /// still charged: ~1 token per streamed event, plus the prompt.
    private func chargeUnreportedStream() {
        guard !usageSeen, let relay else { return }
        usageSeen = true
        proxy.limiter.charge(relay.identity, tokens: relay.promptEstimate + streamedEvents)
    }
}
