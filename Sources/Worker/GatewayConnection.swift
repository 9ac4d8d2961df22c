import Atomics
import Logging
import NIOCore
import NIOHTTP1
import Shared

/// One client connection, as the last handler of its pipeline: reads requests in order,
/// bounds each body, hands it to the ``RequestHandler`` with a ``ResponseWriter``, and does
/// the bookkeeping when the response ends or the client hangs up.
///
/// Everything runs on the connection's event loop, with no task or lock per request: the
/// request is answered by callbacks on the same loop (the upstream connection's reads and
/// the client's writability).
///
/// Pipelining: a request that arrives while a response is under way waits in a queue and
/// is served after it, in order; while one waits, reading from the socket stops. Clients
/// that do not pipeline (nearly all) never stop reading, so a keep-alive request costs no
/// `epoll_ctl` to pause and resume the socket.
final class GatewayConnection: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let handler: RequestHandler
    private let registry: ConnectionRegistry
    private let maxBodyBytes: Int

    private enum State {
        case idle
        case readingBody(HTTPRequestHead, ByteBuffer, MonotonicInstant)
        /// The answer went out before the whole body arrived (413): ignore the rest.
        case discarding
        case responding(ResponseWriter, HTTPRequestHead, Route, MonotonicInstant)
    }

    private var state = State.idle
    private var context: ChannelHandlerContext?
    /// Parts of pipelined requests that arrived during a response.
    private var pipelined = CircularBuffer<HTTPServerRequestPart>()
    private var pipelinedBytes = 0
    private var readHeld = false
    private var servingQueue = false

    /// Pipelined bodies held at most before the connection is closed (on top of one
    /// request's body limit).
    static let maxPipelinedBytes = 1 << 20
    /// Pipelined request parts held at most (a flood of tiny requests in one write).
    static let maxPipelinedParts = 1024

    init(handler: RequestHandler, registry: ConnectionRegistry, maxBodyBytes: Int) {
        self.handler = handler
        self.registry = registry
        self.maxBodyBytes = maxBodyBytes
    }

    var isDraining: Bool { registry.isDraining }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        registry.register(context.channel)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        var isResponding: Bool {
            if case .responding = state { true } else { false }
        }
        if case .discarding = state { return }
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

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch (part, state) {
        case (.head(let head), .idle):
            registry.requestStarted(on: context.channel)
            let start = MonotonicInstant.now()
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
                refuseTooLarge(head: head, start: start, context: context)
                return
            }
            if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
            let expected = head.headers.first(name: "content-length").flatMap(Int.init) ?? 0
            state = .readingBody(head, context.channel.allocator.buffer(capacity: min(expected, maxBodyBytes)), start)
        case (.body(var chunk), .readingBody(let head, var body, let start)):
            if body.readableBytes + chunk.readableBytes > maxBodyBytes {
                refuseTooLarge(head: head, start: start, context: context)
                return
            }
            state = .idle  // drop the reference while appending, so the buffer is not copied
            body.writeBuffer(&chunk)
            state = .readingBody(head, body, start)
        case (.end, .readingBody(let head, let body, let start)):
            let writer = makeWriter(head: head, context: context)
            let route = Route(path: head.uri)
            state = .responding(writer, head, route, start)
            handler.handle(GatewayRequest(head: head, route: route, body: body, requestID: writer.requestID), writer: writer)
        case (_, .discarding):
            break
        default:
            // A part out of order cannot come from NIO's parser; close rather than guess.
            context.close(promise: nil)
        }
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
        registry.unregister(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Parser errors were answered by HTTPProtocolErrorHandler; anything else
        // (a reset, a timeout close) ends the connection.
        context.close(promise: nil)
    }

    /// The response's last part: bookkeeping first, then the end, then a close if due, or
    /// the next pipelined request if one is waiting.
    func responseEnded(_ writer: ResponseWriter) {
        guard let context, case .responding(let current, let head, let route, let start) = state, current === writer else { return }
        state = .idle
        handler.finished(request: head, route: route, requestID: writer.requestID, writer: writer, start: start)
        let drainingNow = registry.requestFinished(on: context.channel)
        if !writer.keepAlive || drainingNow {
            state = .discarding
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            if !pipelined.isEmpty { serveQueue(context: context) }
        }
    }

    private func makeWriter(head: HTTPRequestHead, context: ChannelHandlerContext) -> ResponseWriter {
        ResponseWriter(
            connection: self, context: context, requestID: RequestID.make(from: head.headers), keepAlive: head.isKeepAlive,
            version: head.version, isHead: head.method == .HEAD)
    }

    /// 413 as soon as the body is known to be too large, without reading the rest; the
    /// connection closes after it.
    private func refuseTooLarge(head: HTTPRequestHead, start: MonotonicInstant, context: ChannelHandlerContext) {
        let writer = makeWriter(head: head, context: context)
        writer.forceClose()
        state = .responding(writer, head, Route(path: head.uri), start)
        writer.send(error: .payloadTooLarge(limit: maxBodyBytes))
        state = .discarding
    }
}

/// Request ids: the client's `x-request-id` when it is short and plain, else a new one.
enum RequestID {
    /// Random per process, so ids of different workers do not collide; a counter after it,
    /// so making an id costs no syscall.
    static let prefix: String = {
        let hex = String(UInt32.random(in: .min ... .max), radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }()
    static let counter = ManagedAtomic<UInt64>(0)

    static func make(from headers: HTTPHeaders) -> String {
        if let given = headers.first(name: "x-request-id"), (1...64).contains(given.utf8.count),
            given.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || $0 == 0x5F })
        {
            return given
        }
        let hex = String(counter.loadThenWrappingIncrement(ordering: .relaxed), radix: 16)
        return "req_" + prefix + String(repeating: "0", count: max(0, 8 - hex.count)) + hex
    }
}
