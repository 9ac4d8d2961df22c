import HTTP1
import Logging
import NIOCore
import NIOHTTP1
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// One proxied request on its way through the planned upstream attempts, driven by
/// callbacks on the worker's event loop: a new connection's connect, the upstream connection's
/// reads, the client's writability and hang-up. No task, no lock: the client connection
/// and the upstream connection share the loop.
///
/// An attempt fails over to the next one only while nothing has reached the client:
/// connect failures, timeouts before the head, and 5xx heads (except on the last attempt,
/// whose error answer is passed on). A streamed answer is relayed event by event; when
/// the client cannot take more, reading from the upstream stops until it can.
final class ProxyExchange: UpstreamResponseHandling, ResponseProducer {
    private let proxy: ProxyHandler
    private let request: GatewayRequest
    private let body: OpenAIRequestBody
    private let clientModel: String
    private let identity: ClientIdentity
    private let writer: ResponseWriter
    private let attempts: ProxyHandler.AttemptPlan
    /// An upload's body, sent to each attempt's connection as it arrives (nil: the request's
    /// body was read whole).
    private let upload: FormUpload?

    private var state: ProxyExchangeStateMachine
    private var attempt: ProxyHandler.Attempt?
    private var connection: UpstreamConnection?
    /// When the request left for the upstream (set by each attempt's send).
    private var sent = MonotonicInstant(nanoseconds: 0)
    /// Prompt blocks this attempt counts as waiting for prefill on `prefillUpstream`.
    private var prefillHeld: UInt64 = 0
    private var prefillUpstream = 0
    /// The upstream the prompt's blocks were last recorded for (a resend to it after a stale
    /// connection records nothing more).
    private var promptRecordedFor: Int?

    /// A non-streamed answer as it arrives: kept outside ``phase`` so that appending to it
    /// never copies what was already read (a second reference would make every append copy
    /// the whole buffer), and sized from `content-length` when there is one.
    private var wholeBody: ByteBuffer?
    private var wholeContentType: String?
    private var relay: RelayContext?
    // Streaming state.
    private lazy var events = SSEEventBuffer(maxEventBytes: proxy.maxEventBytes)
    private var tools: ToolCallStreamNormalizer?
    private var firstEvent = true
    /// The usage a stream's events reported so far (each count the largest seen: OpenAI sends
    /// it once, or cumulatively with `continuous_usage_stats`; Anthropic sends the input in
    /// `message_start` and the output so far in each `message_delta`), all of it charged.
    private var streamUsage: TokenUsage?
    private var streamedEvents = 0
    /// A created response whose id is not yet recorded (``ResponseOwners``): its stream's
    /// events are read one by one until the one that names it.
    private var awaitingResponseID = false

    init(
        proxy: ProxyHandler, request: GatewayRequest, body: OpenAIRequestBody, clientModel: String, identity: ClientIdentity,
        writer: ResponseWriter, attempts: ProxyHandler.AttemptPlan, upload: FormUpload? = nil, firstHoldsIt: Bool = false
    ) {
        self.proxy = proxy
        self.request = request
        self.body = body
        self.clientModel = clientModel
        self.identity = identity
        self.writer = writer
        self.attempts = attempts
        self.upload = upload
        self.state = ProxyExchangeStateMachine(attemptCount: attempts.count, firstHoldsIt: firstHoldsIt)
    }

    func start() {
        writer.producer = self
        tryNextAttempt()
    }

    // MARK: Attempts

    private func tryNextAttempt() {
        while true {
            switch state.nextAttempt() {
            case .stop:
                return
            case .exhausted:
                if state.notFoundSeen, state.holderFailure == nil, let id = Route.responseID(inPath: request.head.uri) {
                    writer.send(error: .responseNotFound(id))
                    return
                }
                let error = (state.holderFailure ?? state.lastFailure).map {
                    ProxyExchangeStateMachine.error(for: $0.failure, upstream: proxy.registry.upstreams[attempts[$0.attempt].upstream].name)
                }
                writer.send(error: error ?? .unavailable("No upstream is available for model '\(clientModel)'.", retryAfterSeconds: 1))
                return
            case .attempt(let index):
                let attempt = attempts[index]
                self.attempt = attempt
                let upstream = proxy.registry.upstreams[attempt.upstream]
                writer.request.logFields.upstream = upstream.name
                if upstream.isDemo {
                    state.servedByDemo()
                    proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .success)
                    guard let upload else {
                        proxy.demo.respond(route: request.route, body: body, clientModel: clientModel, writer: writer)
                        return
                    }
                    upload.discardRest { [proxy, request, clientModel, writer] in
                        proxy.demo.transcribe(route: request.route, stream: upload.stream, clientModel: clientModel, writer: writer)
                    }
                    return
                }
                if let upload, !upload.canStartAttempt {
                    // A large upload already went to an upstream that failed: it is not kept.
                    state.gaveUp()
                    writer.send(
                        error: state.lastFailure.map {
                            ProxyExchangeStateMachine.error(for: $0.failure, upstream: proxy.registry.upstreams[attempts[$0.attempt].upstream].name)
                        } ?? .badGateway("The upload could not be sent again to another upstream."))
                    return
                }
                guard let pool = proxy.upstreams[attempt.upstream] else { continue }
                switch proxy.admitThroughBreaker(attempt.upstream) {
                case .reject(let retryAfter):
                    proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .rejected)
                    state.rejected(retryAfterSeconds: retryAfter)
                    continue
                case .probe:
                    state.sending(probe: true)
                case .allow:
                    state.sending(probe: false)
                }
                send(to: pool, attempt: attempt, forceNew: false)
                return
            }
        }
    }

    /// Sends the attempt's request (the state machine has said so: it counts in flight).
    private func send(to pool: UpstreamPool, attempt: ProxyHandler.Attempt, forceNew: Bool) {
        // An upload goes on a new connection: a stale kept-alive one would fail it after its
        // first bytes, which a large upload cannot send again.
        let forceNew = forceNew || upload != nil
        proxy.slot.requestStarted(upstream: attempt.upstream)
        releasePrefill()
        if attempt.recordsPrompt, promptRecordedFor != attempt.upstream {
            promptRecordedFor = attempt.upstream
            proxy.recordPrompt(attempts.promptBlocks, upstream: attempt.upstream)
        }
        // Only a stream tells when prefill is over (its first event comes with the first
        // token); a whole answer's first bytes come when decoding ended too.
        if attempt.prefillBlocks > 0, body.stream {
            proxy.slot.prefillStarted(upstream: attempt.upstream, blocks: attempt.prefillBlocks)
            prefillHeld = attempt.prefillBlocks
            prefillUpstream = attempt.upstream
        }
        sent = .now()
        // A kept-alive connection (the usual case) is taken at once; `forceNew` skips the
        // idle ones (after one turned out stale). `sent` and NIO's deadlines both read
        // CLOCK_MONOTONIC: the pool's age check reuses this reading.
        if !forceNew, let idle = pool.takeIdle(now: .uptimeNanoseconds(sent.nanoseconds)) {
            leased(idle, pool: pool, attempt: attempt, reused: true)
            return
        }
        pool.connect { [self] result in
            guard !state.cancelled else {
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
        guard let upload else {
            connection.send(upstreamRequest(pool: pool), body: forwardedBody(attempt), to: self, reused: reused)
            return
        }
        var head = upstreamRequest(pool: pool)
        head.uploadContentType = request.head.contentType
        connection.sendHead(head, to: self, reused: reused)
        // The head may have failed at once (a closed connection): the failure moved on.
        guard self.connection === connection else { return }
        if !upload.attach(connection, upstreamModel: attempt.target.upstreamModel) {
            connection.abandon()
            abort(with: .badGateway("The upload could not be sent to upstream \(proxy.registry.upstreams[attempt.upstream].name)."), logged: "upload_not_sent")
        }
    }

    private func upstreamRequest(pool: UpstreamPool) -> UpstreamRequest {
        let route = request.route
        return UpstreamRequest(
            method: route.method, pathPrefix: pool.url.pathPrefix, route: route.namesResponse ? Self.target(of: request.head.uri) : route.template,
            host: pool.hostHeader, acceptsEventStream: body.stream, requestID: request.requestID,
            anthropicVersion: route.family == .anthropic ? request.head.anthropicVersion : nil, authorization: pool.authorization)
    }

    /// A request target as forwarded: its path and query (`?stream=true&starting_after=3`
    /// replays a stored response), without a fragment (a ``Route/namesResponse`` route's,
    /// whose id ``Route`` checked; the parser checked the rest).
    static func target(of uri: String) -> String {
        String(decoding: uri.utf8.prefix { $0 != UInt8(ascii: "#") }, as: UTF8.self)
    }

    private func forwardedBody(_ attempt: ProxyHandler.Attempt) -> ByteBuffer {
        let addUsage = body.stream && (request.route.family?.asksForStreamUsage ?? false)
        if attempt.target.upstreamModel == body.model && !addUsage || body.bytes.isEmpty {
            return request.body  // nothing to change: send the client's bytes as they are
        }
        return ByteBuffer(bytes: body.forwarding(model: attempt.target.upstreamModel, addIncludeUsage: addUsage))
    }

    /// This attempt was the breaker's half-open probe and ends without an answer to judge
    /// the upstream by: let the next request probe at once.
    private func releaseProbe() {
        guard state.releasingProbe(), let attempt else { return }
        proxy.releaseProbe(attempt.upstream)
    }

    /// The attempt is over: its connection is let go, and it no longer counts as in flight
    /// on its upstream.
    private func endAttempt() {
        upload?.detach()
        connection = nil
        releasePrefill()
        if state.attemptEnded(), let attempt { proxy.slot.requestEnded(upstream: attempt.upstream) }
    }

    /// The attempt's prompt no longer waits for its prefill: its answer started (the first
    /// body bytes: a stream's first event comes with the first token), or the attempt ended.
    private func releasePrefill() {
        guard prefillHeld > 0 else { return }
        proxy.slot.prefillEnded(upstream: prefillUpstream, blocks: prefillHeld)
        prefillHeld = 0
    }

    func clientGone() {
        upload?.stop()
        let action = state.clientGone()
        connection?.abandon()
        switch action {
        case .stream:
            chargeUnreportedStream()
            recordOutcome(healthy: true)
        case .whole(let status):
            if status < 500 { recordOutcome(healthy: true) }
        case .awaitingAnswer:
            // The upstream's answer will never be read: a probe must not hold the breaker
            // half-open until the probe timeout.
            releaseProbe()
        case .none:
            break
        }
        wholeBody = nil
        endAttempt()
    }

    /// The worker's drain timeout ended this request (SIGTERM, then `DRAIN_TIMEOUT`): a
    /// stream ends the way SDKs understand (an error event, then `[DONE]`); a request
    /// still waiting for its answer gets 503.
    func drainDeadlineReached() {
        abort(
            with: .unavailable("The gateway is shutting down and its drain timeout ended this request.", retryAfterSeconds: 1, code: "shutting_down"),
            logged: "drain_timeout")
    }

    /// Ends the request now with `error` (the drain timeout, an upload the client got wrong
    /// midway): a stream ends with an error event; an answer not yet started is `error`.
    func abort(with error: GatewayError, logged: String) {
        upload?.stop()
        let action = state.drainDeadlineReached()
        guard action != .none else { return }
        connection?.abandon()
        endAttempt()
        switch action {
        case .endStream:
            endStream(with: error, logged: logged)
        case .answer:
            releaseProbe()
            wholeBody = nil
            writer.send(error: error)
        case .none:
            break
        }
    }

    /// Breaker and metrics for an answer that started (status below 500).
    private func recordOutcome(healthy: Bool) {
        guard let attempt else { return }
        if !healthy { proxy.recordBreaker(attempt.upstream, success: false) }
        proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: healthy ? .success : .error)
    }

    // MARK: UpstreamResponseHandling

    func upstreamHead(_ head: UpstreamResponseHead) {
        guard let attempt else { return }
        let status = head.status
        let contentType = head.contentType
        let action = state.head(
            status: status, isJSON: contentType.map(Self.isJSON) ?? false, isEventStream: contentType.map(Self.isEventStream) ?? false,
            notFoundMovesOn: request.route.namesResponse)
        guard action != .ignore else { return }
        let upstream = proxy.registry.upstreams[attempt.upstream]
        // The upstream answered: that is what a (half-open) breaker needs to know, now, not
        // when a long stream ends.
        let healthy = ProxyExchangeStateMachine.breakerSuccess(status: status)
        proxy.recordBreaker(attempt.upstream, success: healthy)
        if !healthy { proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .error) }
        switch action {
        case .ignore:
            return
        case .failOver:
            // A 404 for a stored response is an answer (another upstream may hold it), not a fault.
            proxy.logger.log(
                level: status == 404 ? .debug : .warning, "upstream answered \(status); trying the next",
                metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)"])
            connection?.abandon()
            endAttempt()
            tryNextAttempt()
        case .refuse:
            connection?.abandon()
            endAttempt()
            proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: .error)
            proxy.logger.warning(
                "upstream answered with an unexpected content type",
                metadata: [
                    "request_id": "\(request.requestID)", "upstream": "\(upstream.name)", "status": "\(status)",
                    "content_type": "\(Self.printable(contentType ?? "none"))",
                ])
            writer.send(error: .badGateway("Upstream \(upstream.name) answered \(status) with a content type this route does not return."))
        case .stream:
            relay = relayContext(attempt: attempt, upstream: upstream)
            tools = relay?.toolParser.map { ToolCallStreamNormalizer(parser: $0) }
            writer.writeEventStreamHead()
            writer.onWritable = { [weak self] in self?.connection?.resumeReading() }
        case .whole:
            relay = relayContext(attempt: attempt, upstream: upstream)
            wholeBody = nil
            wholeContentType = contentType
            if let length = head.contentLength, length <= ProxyHandler.maxResponseBytes {
                wholeBody = writer.allocator.buffer(capacity: length)
            }
        }
    }

    private func relayContext(attempt: ProxyHandler.Attempt, upstream: GatewayConfiguration.Upstream) -> RelayContext {
        awaitingResponseID = request.route == .responses
        return RelayContext(
            // A stored response's model is that of the upstream's model it was asked of.
            clientModel: request.route.namesResponse ? attempt.target.name : clientModel, upstreamModel: attempt.target.upstreamModel,
            modelLabel: attempt.target.name,
            upstream: upstream.name, upstreamIndex: attempt.upstream, identity: identity, sent: sent,
            clientWantsUsage: upload?.clientWantsUsage ?? body.includeUsage, promptEstimate: body.bytes.count / 4,
            toolParser: request.route == .chatCompletions
                ? ToolCallResponseNormalizer.responseParser(body: body, parserName: attempt.target.toolParser) : nil,
            family: request.route.family ?? .openAI)
    }

    func upstreamBody(_ buffer: ByteBuffer) {
        if prefillHeld > 0 { releasePrefill() }
        switch state.phase {
        case .whole:
            if wholeBody == nil {
                wholeBody = buffer  // the usual small answer: one read, kept as it is
            } else {
                var buffer = buffer
                wholeBody!.writeBuffer(&buffer)  // in place: `wholeBody` is the only reference
            }
            if wholeBody!.readableBytes > ProxyHandler.maxResponseBytes, state.relayAborted() {
                connection?.abandon()
                endAttempt()
                wholeBody = nil
                writer.send(error: .badGateway("Upstream \(relay?.upstream ?? "") sent an answer larger than \(ProxyHandler.maxResponseBytes) bytes."))
                recordOutcome(healthy: false)
            }
        case .streaming:
            relayEvents(buffer)
        case .idle, .awaitingHead, .done:
            break
        }
    }

    func upstreamWritable() { upload?.upstreamWritable() }

    func upstreamReadComplete() {
        if case .streaming = state.phase { writer.flush() }
    }

    func upstreamEnd() {
        switch state.ended() {
        case .whole(let status):
            endAttempt()
            let collected = wholeBody ?? ByteBuffer()
            wholeBody = nil
            sendWhole(status: status, contentType: wholeContentType, body: collected)
            if status < 500 { recordOutcome(healthy: true) }
        case .stream:
            endAttempt()
            for piece in tools?.finish() ?? [] { writer.write(ByteBuffer(bytes: piece)) }
            let rest = events.finish()
            if !rest.isEmpty { writer.write(ByteBuffer(bytes: rest)) }
            chargeUnreportedStream()
            writer.end()
            recordOutcome(healthy: true)
        case .noHead:
            upstreamFailed(.failed("an answer ended before its head"))
        case .ignore:
            endAttempt()
        }
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        guard !state.cancelled else { return }  // nothing is answered after the client left
        let action = state.failed(failure)
        endAttempt()
        guard let attempt else { return }
        let upstream = proxy.registry.upstreams[attempt.upstream]
        switch action {
        case .ignore:
            break
        case .retryOnNewConnection:
            state.resending()
            if let pool = proxy.upstreams[attempt.upstream] { send(to: pool, attempt: attempt, forceNew: true) }
        case .outOfLocalResources(let why):
            releaseProbe()
            proxy.logger.error(
                "upstream request not sent: the gateway is out of local resources",
                metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)", "error": "\(why)"])
            writer.send(
                error: .unavailable("The gateway is out of local resources (\(why)); try again shortly.", retryAfterSeconds: 1, code: "gateway_overloaded"))
        case .failOver(let outcome):
            proxy.recordBreaker(attempt.upstream, success: false)
            proxy.logger.warning(
                "upstream request failed",
                metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)", "error": "\(failure)"])
            proxy.metrics.upstream(model: attempt.target.name, upstream: attempt.upstream, outcome: outcome)
            tryNextAttempt()
        case .brokeOffWhole(let countUnhealthy):
            wholeBody = nil
            writer.send(error: .badGateway("Upstream \(upstream.name) broke off its answer."))
            if countUnhealthy { recordOutcome(healthy: false) }
        case .brokeOffStream:
            // The upstream broke off mid-stream: end the stream in a way SDKs understand.
            proxy.logger.warning(
                "upstream stream failed", metadata: ["request_id": "\(request.requestID)", "upstream": "\(upstream.name)", "error": "\(failure)"])
            endStream(with: .badGateway("Upstream \(upstream.name) broke off the stream."), logged: "upstream_stream_error")
            recordOutcome(healthy: false)
        }
    }

    // MARK: Relaying

    /// `application/json` or an `application/…+json` type (any case, parameters or not).
    static func isJSON(_ contentType: String) -> Bool {
        if contentType == "application/json" { return true }  // vLLM's, from the head's literal
        let type = contentType.utf8.prefix { $0 != UInt8(ascii: ";") }
            .filter { $0 != 0x20 && $0 != 0x09 }
            .map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }
        let text = String(decoding: type, as: UTF8.self)
        return text == "application/json" || (text.hasPrefix("application/") && text.hasSuffix("+json"))
    }

    /// At most 100 printable ASCII characters of a value an upstream chose, for a log line.
    static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.prefix(100).map { (0x20..<0x7F).contains($0.value) ? $0 : "?" }))
    }

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
            if let usage = buffer.withUnsafeReadableBytes({ TokenUsage.find(in: $0, keys: relay.family.usage) }) {
                proxy.account(usage, context: relay, writer: writer)
            }
            if awaitingResponseID, let id = ResponseOwners.responseID(inAnswer: Array(buffer: buffer)) { recordResponse(id, relay: relay) }
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
        if tools == nil, relay.clientModel == relay.upstreamModel, events.pendingCount == 0, !awaitingResponseID,
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
    /// blank line), none of them mentions `"usage"` and no line ends in CR; else nil (the
    /// event-by-event path, ``SSEEventBuffer``, decides). The common read of a stream: one
    /// or a few token chunks, LF-terminated as vLLM sends them.
    static func wholeEventsWithoutUsage(_ buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { raw -> Int? in
            guard raw.count >= 2, raw[raw.count - 1] == 0x0A, raw[raw.count - 2] == 0x0A, memchr(raw.baseAddress!, 0x0D, raw.count) == nil,
                !TokenUsage.mentionsUsage(raw)
            else {
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
        let completed = events.append(buffer.readableBytesView)
        defer { if events.overflowed { eventTooLong(relay: relay) } }
        for event in completed {
            if firstEvent {
                firstEvent = false
                proxy.metrics.timeToFirstToken(model: relay.modelLabel, seconds: MonotonicInstant.now().seconds(since: relay.sent))
            }
            streamedEvents += 1
            if awaitingResponseID, let data = SSEEventBuffer.data(of: event), let id = ResponseOwners.responseID(inEvent: data) {
                recordResponse(id, relay: relay)
            }
            let (transformed, usage) = proxy.transform(event: event, context: relay)
            if let usage { chargeStream(usage, relay: relay) }
            if let out = transformed {
                if tools == nil {
                    writer.write(ByteBuffer(bytes: out))
                } else {
                    for piece in tools!.transform(event: out) { writer.write(ByteBuffer(bytes: piece)) }
                }
            }
        }
    }

    /// The upstream sent more than `MAX_SSE_EVENT_BYTES` without ending an event: stop
    /// reading it and end the client's stream with an error event.
    private func eventTooLong(relay: RelayContext) {
        guard case .streaming = state.phase, state.relayAborted() else { return }
        connection?.abandon()
        endAttempt()
        proxy.logger.warning(
            "upstream sent an event longer than the limit; stream ended",
            metadata: ["request_id": "\(request.requestID)", "upstream": "\(relay.upstream)", "limit": "\(events.maxEventBytes)"])
        endStream(
            with: .badGateway("Upstream \(relay.upstream) sent an event longer than \(events.maxEventBytes) bytes."), logged: "upstream_event_too_long")
        recordOutcome(healthy: false)
    }

    /// Ends a relayed stream early the way SDKs understand: tool-call text held back, then
    /// an error event and `data: [DONE]`; what was streamed is charged if no usage came.
    private func endStream(with error: GatewayError, logged: String) {
        writer.request.logFields.error = logged
        for piece in tools?.finish() ?? [] { writer.write(ByteBuffer(bytes: piece)) }
        writer.write(ByteBuffer(string: (request.route.family ?? .openAI).streamError(error)))
        chargeUnreportedStream()
        writer.end()
    }

    /// Remembers that this attempt's upstream holds the response `id` (every worker reads it).
    private func recordResponse(_ id: String, relay: RelayContext) {
        awaitingResponseID = false
        guard let attempt else { return }
        proxy.segment.responseOwners.record(id, owner: .init(upstream: relay.upstreamIndex, modelPosition: attempt.target.position))
    }

    /// Charges what `reported` adds to the stream's usage so far.
    private func chargeStream(_ reported: TokenUsage, relay: RelayContext) {
        let before = streamUsage ?? TokenUsage(prompt: 0, completion: 0)
        let now = TokenUsage(prompt: max(before.prompt, reported.prompt), completion: max(before.completion, reported.completion))
        streamUsage = now
        proxy.account(
            TokenUsage(prompt: now.prompt - before.prompt, completion: now.completion - before.completion), context: relay, writer: writer,
            soFar: now)
    }

    /// A stream that ended without usage (the client hung up, the upstream broke off) is
    /// still charged: ~1 token per streamed event, plus the prompt.
    private func chargeUnreportedStream() {
        guard streamUsage == nil, let relay else { return }
        streamUsage = TokenUsage(prompt: 0, completion: 0)
        proxy.charge(relay.identity, tokens: relay.promptEstimate + streamedEvents)
    }
}
