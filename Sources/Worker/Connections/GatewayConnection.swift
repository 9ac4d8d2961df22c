import HTTP1
import NIOCore
import NIOHTTP1
import Shared

/// One client connection: parses its requests (``HTTP1Parser``), feeds what happens to its
/// ``ClientConnectionStateMachine`` and performs what that decides: it bounds each body,
/// hands the request to the ``RequestHandler`` with a ``ResponseWriter``, does the
/// bookkeeping when the response ends or the client hangs up, answers what the parser
/// refuses like any other request (counted, logged), and closes connections that stall.
/// Responses leave as bytes the ``ResponseWriter`` framed: there is no response encoder and
/// no other handler per connection.
///
/// Everything runs on the connection's event loop, with no task or lock per request: the
/// request is answered by callbacks on the same loop (the upstream connection's reads and
/// the client's writability). It is the only handler in the connection's pipeline.
///
/// Pipelining: a request that arrives while a response is under way waits in the machine's
/// queue and is served after it, in order; while one waits, reading from the socket stops.
final class GatewayConnection: ChannelDuplexHandler, UploadReads {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let handler: RequestHandler
    private let registry: ConnectionRegistry
    /// This connection in the registry, from `handlerAdded` on.
    private var registryEntry: ConnectionRegistry.Entry?
    private let maxBodyBytes: Int
    private var machine: ClientConnectionStateMachine
    private var parser = HTTP1Parser<RequestHead>()
    private var context: ChannelHandlerContext?
    /// The `Authorization` header this connection last authenticated with (a keep-alive
    /// client's next request skips the digest when it sends the same).
    private var rememberedCredential: RememberedCredential?

    // The request being read or answered; the machine knows which of the two.
    /// Its head (nil for the answer to what the parser refused).
    private var head: RequestHead?
    /// When its head arrived.
    private var requestStart = MonotonicInstant(nanoseconds: 0)
    /// Its body so far: nil until a piece of it arrived.
    private var body: ByteBuffer?
    /// Its response's writer, from the response's start to its end.
    private var writer: ResponseWriter?
    /// An upload taking its body as it arrives (``Route/streamsRequestBody``), until the
    /// body ends, and the bytes it was given.
    private var upload: FormUpload?
    private var uploadedBytes = 0

    /// The one scheduled deadline check (the machine says when it is due).
    private var check: Scheduled<Void>?
    /// Pipelined requests are being served: a response that ends meanwhile leaves the rest
    /// to that loop instead of starting a second one inside it.
    private var servingPipelined = false

    init(handler: RequestHandler, registry: ConnectionRegistry, maxBodyBytes: Int, timeouts: ClientConnectionStateMachine.Timeouts) {
        self.handler = handler
        self.registry = registry
        self.maxBodyBytes = maxBodyBytes
        self.machine = ClientConnectionStateMachine(timeouts: timeouts, maxBodyBytes: maxBodyBytes)
    }

    /// Sets up a client connection's pipeline: this handler alone.
    static func configure(
        _ channel: any Channel, handler: RequestHandler, registry: ConnectionRegistry, maxBodyBytes: Int,
        timeouts: ClientConnectionStateMachine.Timeouts
    ) throws {
        try channel.pipeline.syncOperations.addHandler(
            GatewayConnection(handler: handler, registry: registry, maxBodyBytes: maxBodyBytes, timeouts: timeouts))
    }

    /// The worker drains: a response that starts now is the connection's last.
    var isDraining: Bool { registry.isDraining }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        registryEntry = registry.register(context.channel)
        if context.channel.isActive { run(machine.channelActive(now: context.eventLoop.now), context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelCheck()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        run(machine.channelActive(now: context.eventLoop.now), context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        parser.feed(unwrapInboundIn(data))
        do throws(HTTP1ParseError) {
            while let part = try parser.next() {
                let action = machine.received(part)
                if case .discard = action { return }
                run(action, context: context)
            }
        } catch {
            run(machine.parseError(error, channelActive: context.channel.isActive), context: context)
            return
        }
        run(machine.readHandled(now: context.eventLoop.now), context: context)
    }

    func read(context: ChannelHandlerContext) {
        run(machine.readRequested(), context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let writer { writer.onWritable?() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        run(machine.channelInactive(), context: context)
        cancelCheck()
        if let registryEntry { registry.unregister(registryEntry) }
        context.fireChannelInactive()
    }

    /// The worker's drain timeout (``DrainDeadlineReached``).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is DrainDeadlineReached else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        run(machine.drainDeadlineReached(), context: context)
    }

    /// A socket error (a reset): close; channelInactive cleans up.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// The response's last part: bookkeeping first, then the end, then a close if due, or
    /// the next pipelined request if one is waiting.
    func responseEnded(_ writer: ResponseWriter) {
        guard let context, writer === self.writer else { return }
        self.writer = nil
        upload = nil
        finished(writer)
        head = nil
        let draining = registryEntry.map { registry.requestFinished($0) } ?? registry.isDraining
        let rest = writer.takeRest()
        switch machine.responseEnded(keepAlive: writer.keepAlive, draining: draining, now: context.eventLoop.now) {
        case .close:
            let channel = context.channel
            // The promise of the last write completes once everything before it was sent.
            context.writeAndFlush(wrapOutboundOut(rest ?? channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                channel.close(promise: nil)
            }
        case .keepAlive(let idleCheck, let serve):
            if let rest { context.writeAndFlush(wrapOutboundOut(rest), promise: nil) } else { context.flush() }
            if let idleCheck { scheduleCheck(at: idleCheck, context: context) }
            if serve { servePipelined(context: context) }
        }
    }

    // MARK: - Actions

    private func run(_ action: ClientConnectionStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .nothing, .discard:
            break
        case .read:
            context.read()
        case .scheduleCheck(let deadline):
            scheduleCheck(at: deadline, context: context)
        case .startRequest(let head):
            begin(head, context: context)
        case .appendBody(var chunk):
            appendBody(&chunk, context: context)
        case .respond:
            respond(context: context)
        case .refuse(let error):
            refuse(error, context: context)
        case .tellProducerOfDrain:
            writer?.drainDeadlineReached()
            run(machine.producerToldOfDrain(), context: context)
        case .abandonResponse:
            abandonResponse()
        case .close:
            context.close(promise: nil)
        }
    }

    /// Serves pipelined requests after a response ended, until one is under way; reads on
    /// once none waits.
    private func servePipelined(context: ChannelHandlerContext) {
        guard !servingPipelined else { return }
        servingPipelined = true
        defer { servingPipelined = false }
        while let action = machine.servePipelined() {
            run(action, context: context)
        }
    }

    /// A head in its turn. Route, method and key are known from it: a request refused for
    /// them is answered before its body is read (nothing is buffered for an unauthenticated
    /// client), and the connection closes instead of reading the body to skip it.
    private func begin(_ head: RequestHead, context: ChannelHandlerContext) {
        if let registryEntry { registry.requestStarted(registryEntry) }
        self.head = head
        body = nil
        requestStart = MonotonicInstant.now()
        // The parser checked it: one content-length, digits only (none when chunked).
        if head.contentLength > maxBodyBytes {
            refuseBeforeBody(.payloadTooLarge(limit: maxBodyBytes), context: context)
            return
        }
        let streamsBody = head.route.streamsRequestBody
        if head.hasBody || streamsBody, let refusal = handler.refusalBeforeBody(head, remembering: &rememberedCredential) {
            refuseBeforeBody(refusal, context: context)
            return
        }
        var boundary: MultipartBoundary?
        if streamsBody {
            switch RequestHandler.uploadBoundary(head) {
            case .success(let found): boundary = found
            case .failure(let refusal): return refuseBeforeBody(refusal, context: context)
            }
        }
        if head.version != .http1_0, head.expectsContinue {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
        }
        if let boundary { beginUpload(head, boundary: boundary, context: context) }
    }

    /// An upload's head: its response's writer and its upload start now, and its body goes
    /// to the upload piece by piece.
    private func beginUpload(_ head: RequestHead, boundary: MultipartBoundary, context: ChannelHandlerContext) {
        let writer = makeWriter(head: head, route: head.route, context: context)
        self.writer = writer
        machine.streamingBody()
        uploadedBytes = 0
        upload = handler.beginUpload(head, boundary: boundary, writer: writer, reads: self, remembering: &rememberedCredential)
    }

    func pauseUploadReads() { machine.pauseBodyReads() }

    func resumeUploadReads() {
        guard let context else { return }
        run(machine.resumeBodyReads(), context: context)
    }

    /// The body of a request without one.
    private static let noBody = ByteBuffer()

    /// Takes a piece of the request body (413 as soon as it is known to be too large). A
    /// body that arrives whole in one read (the usual case: head and body in one packet) is
    /// kept as the slice of that read it is, with no buffer of its own and no copy; the
    /// pieces of a longer one are appended in place, to a buffer of the announced length.
    /// The body is a property of its own, taken out while it grows: a second reference to
    /// it (it used to sit in an enum with the head, matched in a `switch`) made every append
    /// copy the whole body so far.
    private func appendBody(_ chunk: inout ByteBuffer, context: ChannelHandlerContext) {
        if let upload {
            uploadedBytes += chunk.readableBytes
            guard uploadedBytes <= maxBodyBytes else {
                // The rest is not read: it waits behind the answer, and the connection
                // closes after it.
                self.upload = nil
                machine.refusedBeforeBody()
                upload.tooLarge(limit: maxBodyBytes)
                return
            }
            upload.received(chunk)
            return
        }
        guard let head else { return }
        if (body?.readableBytes ?? 0) + chunk.readableBytes > maxBodyBytes {
            refuseBeforeBody(.payloadTooLarge(limit: maxBodyBytes), context: context)
            return
        }
        if body == nil && chunk.readableBytes == head.contentLength {
            body = chunk
        } else {
            var grown = body ?? context.channel.allocator.buffer(capacity: max(head.contentLength, chunk.readableBytes))
            body = nil  // `grown` is the buffer's only reference while it grows
            grown.writeBuffer(&chunk)
            body = grown
        }
    }

    /// The request was read whole: the handler answers it.
    private func respond(context: ChannelHandlerContext) {
        if let upload {
            self.upload = nil
            upload.ended()
            return
        }
        // An upload whose body was refused midway never reaches the handler.
        guard let head, !head.route.streamsRequestBody else {
            context.close(promise: nil)
            return
        }
        let route = head.route
        let writer = makeWriter(head: head, route: route, context: context)
        self.writer = writer
        let body = self.body ?? Self.noBody
        self.body = nil  // the request holds the body from here
        handler.handle(GatewayRequest(head: head, route: route, body: body, requestID: writer.requestID), writer: writer, remembering: &rememberedCredential)
    }

    private func makeWriter(head: RequestHead, route: Route, context: ChannelHandlerContext) -> ResponseWriter {
        ResponseWriter(
            connection: self, context: context, requestID: RequestID.make(given: head.requestID), keepAlive: head.keepsConnectionAlive,
            version: head.version, isHead: head.method == .HEAD,
            errorShape: route.family?.errorShape ?? .openAI)
    }

    /// Answers `error` before the body is read; the connection closes after it (the unread
    /// body cannot be told from a next request).
    private func refuseBeforeBody(_ error: GatewayError, context: ChannelHandlerContext) {
        guard let head else { return }
        machine.refusedBeforeBody()
        body = nil
        let writer = makeWriter(head: head, route: head.route, context: context)
        writer.forceClose()
        self.writer = writer
        writer.send(error: error)
    }

    /// What the parser refused (garbage request line, oversized head, smuggling-prone
    /// framing), when the machine lets it be answered: an OpenAI-shaped 400, 431 or 505,
    /// sent, counted and logged like any answer (route and method `other`: there is no
    /// head to tell them); the connection closes after it.
    private func refuse(_ error: HTTP1ParseError, context: ChannelHandlerContext) {
        head = nil
        body = nil
        requestStart = MonotonicInstant.now()
        let writer = ResponseWriter(
            connection: self, context: context, requestID: RequestID.make(given: nil), keepAlive: false, version: .http1_1, isHead: false)
        self.writer = writer
        writer.send(error: Self.answer(to: error))
    }

    /// The error a client gets for what the parser refused.
    static func answer(to error: HTTP1ParseError) -> GatewayError {
        switch error {
        case .headTooLarge: .headersTooLarge()
        case .versionNotSupported: .httpVersionNotSupported()
        case .malformed: .badRequest("Malformed HTTP request.", code: "bad_http")
        }
    }

    /// The client hung up mid-response: its producer stops (and the upstream with it), and
    /// the request is counted and logged (499 unless a head had gone out).
    private func abandonResponse() {
        upload?.stop()
        upload = nil
        guard let writer else { return }
        self.writer = nil
        writer.clientClosed()
        finished(writer)
        head = nil
    }

    /// Counts the request and writes its access line.
    private func finished(_ writer: ResponseWriter) {
        let method = head.map { RequestHandler.methodLabel($0.method) } ?? "other"
        handler.finished(method: method, route: head?.route ?? .other, requestID: writer.requestID, writer: writer, start: requestStart)
    }

    // MARK: - The deadline check

    /// Runs the machine's ``ClientConnectionStateMachine/deadlineCheck(now:)`` at
    /// `deadline`, instead of the check scheduled before.
    private func scheduleCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        check?.cancel()
        check = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            check = nil
            guard let context = self.context else { return }
            run(machine.deadlineCheck(now: context.eventLoop.now), context: context)
        }
    }

    private func cancelCheck() {
        check?.cancel()
        check = nil
    }
}
