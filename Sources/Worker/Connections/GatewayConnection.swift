import Atomics
import HTTP1
import Logging
import NIOCore
import NIOHTTP1
import Shared

/// One client connection: parses its requests (``HTTP1Parser``) and serves them in order,
/// bounds each body, hands it to the ``RequestHandler`` with a ``ResponseWriter``, and does
/// the bookkeeping when the response ends or the client hangs up. It also answers what
/// the parser refuses with an OpenAI-shaped error, and closes connections that stall
/// (``ConnectionTimer``). Responses leave as bytes the ``ResponseWriter`` framed: there is
/// no response encoder and no other handler per connection.
///
/// Everything runs on the connection's event loop, with no task or lock per request: the
/// request is answered by callbacks on the same loop (the upstream connection's reads and
/// the client's writability). It is the only handler in the connection's pipeline.
///
/// Pipelining: a request that arrives while a response is under way waits in a queue and
/// is served after it, in order; while one waits, reading from the socket stops. Clients
/// that do not pipeline (nearly all) never stop reading, so a keep-alive request costs no
/// `epoll_ctl` to pause and resume the socket.
final class GatewayConnection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    typealias RequestPart = HTTPPart<RequestHead, ByteBuffer>

    private let handler: RequestHandler
    private let registry: ConnectionRegistry
    /// This connection in the registry, from `handlerAdded` on.
    private var registryEntry: ConnectionRegistry.Entry?
    private let maxBodyBytes: Int
    private let timer: ConnectionTimer
    /// Requests read whose response has not ended (more than one when pipelined).
    private var requestsInFlight = 0

    private enum State {
        case idle
        /// The body so far: nil until a piece of it arrived.
        case readingBody(RequestHead, ByteBuffer?, MonotonicInstant)
        /// The answer went out before the whole body arrived (413): ignore the rest.
        case discarding
        case responding(ResponseWriter, RequestHead, Route, MonotonicInstant)
    }

    private var state = State.idle
    private var parser = HTTP1Parser<RequestHead>()
    private var context: ChannelHandlerContext?
    /// Parts of pipelined requests that arrived during a response.
    private var pipelined = CircularBuffer<RequestPart>()
    private var pipelinedBytes = 0
    private var readHeld = false
    /// The `Authorization` header this connection last authenticated with (a keep-alive
    /// client's next request skips the digest when it sends the same).
    var rememberedCredential: RememberedCredential?
    private var servingQueue = false
    /// A head arrived and its end has not: the body timeout starts once this read is
    /// handled (a request that arrives whole in one read never arms it).
    private var awaitingBody = false

    /// Pipelined bodies held at most before the connection is closed (on top of one
    /// request's body limit).
    static let maxPipelinedBytes = 1 << 20
    /// Pipelined request parts held at most (a flood of tiny requests in one write).
    static let maxPipelinedParts = 1024

    init(handler: RequestHandler, registry: ConnectionRegistry, maxBodyBytes: Int, timeouts: ConnectionTimer.Timeouts) {
        self.handler = handler
        self.registry = registry
        self.maxBodyBytes = maxBodyBytes
        self.timer = ConnectionTimer(timeouts: timeouts)
    }

    /// Sets up a client connection's pipeline: this handler alone.
    static func configure(
        _ channel: any Channel, handler: RequestHandler, registry: ConnectionRegistry, maxBodyBytes: Int, timeouts: ConnectionTimer.Timeouts
    ) throws {
        try channel.pipeline.syncOperations.addHandler(
            GatewayConnection(handler: handler, registry: registry, maxBodyBytes: maxBodyBytes, timeouts: timeouts))
    }

    var isDraining: Bool { registry.isDraining }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        registryEntry = registry.register(context.channel)
        if context.channel.isActive { timer.arm(timer.timeouts.head, channel: context.channel) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer.cancel()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        timer.arm(timer.timeouts.head, channel: context.channel)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        parser.feed(unwrapInboundIn(data))
        do throws(HTTP1ParseError) {
            while let part = try parser.next() {
                if case .discarding = state { return }
                received(part, context: context)
            }
        } catch {
            refuse(error, context: context)
            return
        }
        if awaitingBody {
            awaitingBody = false
            timer.arm(timer.timeouts.body, channel: context.channel)
        }
    }

    /// One parsed part: served now, or queued behind the response under way.
    private func received(_ part: RequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head:
            requestsInFlight += 1
            awaitingBody = true
        case .end:
            awaitingBody = false
            timer.disarm()  // the response may take as long as the upstream needs
        case .body:
            break
        }
        var isResponding: Bool {
            if case .responding = state { true } else { false }
        }
        if isResponding || !pipelined.isEmpty {
            if case .body(let chunk) = part { pipelinedBytes += chunk.readableBytes }
            guard pipelinedBytes <= maxBodyBytes + Self.maxPipelinedBytes, pipelined.count < Self.maxPipelinedParts else {
                context.close(promise: nil)
                return
            }
            pipelined.append(part)
            return
        }
        handle(part, context: context)
    }

    func read(context: ChannelHandlerContext) {
        if pipelined.isEmpty {
            context.read()
        } else {
            readHeld = true  // a pipelined request waits: read on once it is served
        }
    }

    /// Serves pipelined requests after a response ended, until one is under way.
    private func serveQueue(context: ChannelHandlerContext) {
        guard !servingQueue else { return }
        servingQueue = true
        defer { servingQueue = false }
        while !pipelined.isEmpty {
            if case .responding = state { return }
            if case .discarding = state { return }
            let part = pipelined.removeFirst()
            if case .body(let chunk) = part { pipelinedBytes -= chunk.readableBytes }
            handle(part, context: context)
        }
        if readHeld {
            readHeld = false
            context.read()
        }
    }

    private func handle(_ part: RequestPart, context: ChannelHandlerContext) {
        if case .body(var chunk) = part, case .readingBody = state {
            appendBody(&chunk, context: context)
            return
        }
        switch (part, state) {
        case (.head(let head), .idle):
            if let registryEntry { registry.requestStarted(registryEntry) }
            let start = MonotonicInstant.now()
            // The parser checked it: one content-length, digits only (none when chunked).
            if head.contentLength > maxBodyBytes {
                refuseTooLarge(head: head, start: start, context: context)
                return
            }
            // Route, method and key are known from the head: a request refused for them is
            // answered before its body is read (nothing is buffered for an unauthenticated
            // client), and the connection closes instead of reading the body to skip it.
            if head.hasBody, let refusal = handler.refusalBeforeBody(head, remembering: &rememberedCredential) {
                refuse(head: head, start: start, with: refusal, context: context)
                return
            }
            if head.version != .http1_0, head.expectsContinue {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
            }
            state = .readingBody(head, nil, start)
        case (.end, .readingBody(let head, let body, let start)):
            let route = head.route
            let writer = makeWriter(head: head, route: route, context: context)
            state = .responding(writer, head, route, start)
            handler.handle(GatewayRequest(head: head, route: route, body: body ?? Self.noBody, requestID: writer.requestID), writer: writer)
        case (_, .discarding):
            break
        default:
            // A part out of order cannot come from the parser; close rather than guess.
            context.close(promise: nil)
        }
    }

    /// The body of a request without one.
    private static let noBody = ByteBuffer()

    /// Takes a piece of the request body. A body that arrives whole in one read (the usual
    /// case: head and body in one packet) is kept as the slice of that read it is, with no
    /// buffer of its own and no copy; the pieces of a longer one are appended in place, to a
    /// buffer of the announced length. Called outside the `switch` over `(part, state)`:
    /// that tuple is a second reference to the buffer for as long as the switch runs, which
    /// made every append copy the whole body so far.
    private func appendBody(_ chunk: inout ByteBuffer, context: ChannelHandlerContext) {
        guard case .readingBody(let head, var body, let start) = state else { return }
        if (body?.readableBytes ?? 0) + chunk.readableBytes > maxBodyBytes {
            refuseTooLarge(head: head, start: start, context: context)
            return
        }
        state = .idle  // `body` is the buffer's only reference while it grows
        if body == nil && chunk.readableBytes == head.contentLength {
            body = chunk
        } else {
            var grown = body ?? context.channel.allocator.buffer(capacity: max(head.contentLength, chunk.readableBytes))
            body = nil
            grown.writeBuffer(&chunk)
            body = grown
        }
        state = .readingBody(head, body, start)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, case .responding(let writer, _, _, _) = state {
            writer.onWritable?()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .responding(let writer, let head, let route, let start) = state, !writer.isComplete {
            // The client hung up mid-response: stop the upstream, log 499.
            state = .discarding
            writer.clientClosed()
            handler.finished(request: head, route: route, requestID: writer.requestID, writer: writer, start: start)
        }
        state = .discarding
        timer.cancel()
        if let registryEntry { registry.unregister(registryEntry) }
        context.fireChannelInactive()
    }

    /// A request the parser refuses (garbage request line, oversized head, smuggling-prone
    /// framing) gets an OpenAI-shaped error, unless a response is under way or the
    /// connection is closing; either way the connection closes, since its framing can no
    /// longer be trusted. A response under way is cut off: channelInactive stops its
    /// upstream and logs it.
    private func refuse(_ error: HTTP1ParseError, context: ChannelHandlerContext) {
        var mayAnswer: Bool {
            switch state {
            case .idle, .readingBody: pipelined.isEmpty && context.channel.isActive
            case .responding, .discarding: false
            }
        }
        if mayAnswer {
            let (gatewayError, status): (GatewayError, Int)
            if case .headTooLarge = error {
                (gatewayError, status) = (.badRequest("Request line or headers too large.", code: "headers_too_large"), 431)
            } else if case .versionNotSupported = error {
                (gatewayError, status) = (.badRequest("HTTP version not supported; use HTTP/1.1.", code: "http_version_not_supported"), 505)
            } else {
                (gatewayError, status) = (.badRequest("Malformed HTTP request.", code: "bad_http"), 400)
            }
            let body = gatewayError.jsonBody
            var out = context.channel.allocator.buffer(capacity: 160 + body.utf8.count)
            let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
            out.writeHead { head in
                head.statusLine(status, version: .http1_1, reason: reason)
                head.append("content-type: application/json\r\ncontent-length: ")
                head.append(decimal: body.utf8.count)
                head.append("\r\nconnection: close\r\n\r\n")
                head.append(body)
            }
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            // Counted like any answered request (the route is unknown: `other`).
            handler.metrics.request(route: .other, method: "other", status: status, seconds: 0)
            state = .discarding
        }
        context.close(promise: nil)
    }

    /// The worker's drain timeout: the response under way is ended by its producer where
    /// it can be (a stream gets an error event and `[DONE]`), then the connection closes.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is DrainDeadlineReached else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        if case .responding(let writer, _, _, _) = state, !writer.isComplete {
            writer.drainDeadlineReached()
        }
        if case .responding(let writer, _, _, _) = state, !writer.isComplete {
            context.close(promise: nil)  // nothing could end it: cut it off
        } else if case .idle = state {
            context.close(promise: nil)
        }
    }

    /// A socket error (a reset): close; channelInactive cleans up.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// The response's last part: bookkeeping first, then the end, then a close if due, or
    /// the next pipelined request if one is waiting.
    func responseEnded(_ writer: ResponseWriter) {
        guard let context, case .responding(let current, let head, let route, let start) = state, current === writer else { return }
        state = .idle
        handler.finished(request: head, route: route, requestID: writer.requestID, writer: writer, start: start)
        let drainingNow = registryEntry.map { registry.requestFinished($0) } ?? registry.isDraining
        let rest = writer.takeRest()
        requestsInFlight = max(0, requestsInFlight - 1)
        if !writer.keepAlive || drainingNow {
            state = .discarding
            let channel = context.channel
            // The promise of the last write completes once everything before it was sent.
            context.writeAndFlush(wrapOutboundOut(rest ?? context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                channel.close(promise: nil)
            }
        } else {
            if let rest { context.writeAndFlush(wrapOutboundOut(rest), promise: nil) } else { context.flush() }
            if requestsInFlight == 0 { timer.arm(timer.timeouts.idle, channel: context.channel) }
            if !pipelined.isEmpty { serveQueue(context: context) }
        }
    }

    private func makeWriter(head: RequestHead, route: Route, context: ChannelHandlerContext) -> ResponseWriter {
        ResponseWriter(
            connection: self, context: context, requestID: RequestID.make(given: head.requestID), keepAlive: head.keepsConnectionAlive,
            version: head.version, isHead: head.method == .HEAD,
            errorShape: route.family?.errorShape ?? .openAI)
    }

    /// 413 as soon as the body is known to be too large, without reading the rest; the
    /// connection closes after it.
    private func refuseTooLarge(head: RequestHead, start: MonotonicInstant, context: ChannelHandlerContext) {
        refuse(head: head, start: start, with: .payloadTooLarge(limit: maxBodyBytes), context: context)
    }

    /// Answers `error` before the body is read, then closes the connection (the unread
    /// body cannot be told from a next request).
    private func refuse(head: RequestHead, start: MonotonicInstant, with error: GatewayError, context: ChannelHandlerContext) {
        let route = head.route
        let writer = makeWriter(head: head, route: route, context: context)
        writer.forceClose()
        state = .responding(writer, head, route, start)
        writer.send(error: error)
        state = .discarding
    }
}
