import HTTP1
import NIOCore
import NIOHTTP1
import Shared

/// One upstream connection: writes a request as HTTP/1.1 bytes, parses the response
/// (``HTTP1Parser``) and hands its parts to its ``UpstreamResponseHandling``, enforces the
/// upstream timeout, and stops reading while the client cannot take more (backpressure: it
/// holds back `read()` until resumed). Behind TLS for an https upstream; else the only
/// handler in the pipeline.
final class UpstreamConnection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Bodies up to this size are copied behind the head, so the request is one write.
    static let copyLimit = 16 * 1024

    private let pool: UpstreamPool
    private var context: ChannelHandlerContext?
    /// Who waits for the answer under way (nil when none does: ``state`` says the same).
    private var receiver: (any UpstreamResponseHandling)?
    var idleSince = NIODeadline.uptimeNanoseconds(0)
    private var state = UpstreamConnectionStateMachine()
    private var timer: Scheduled<Void>?
    private var parser = HTTP1Parser<UpstreamResponseHead>()

    init(pool: UpstreamPool) { self.pool = pool }

    /// The last read from the upstream, request sent or resume.
    var lastActivity: NIODeadline { state.lastActivity }

    var isUsable: Bool { context?.channel.isActive ?? false }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// Sends one request (head and body in one flush: one write to the socket).
    func send(_ request: UpstreamRequest, body: ByteBuffer, to receiver: any UpstreamResponseHandling, reused: Bool) {
        guard let context, context.channel.isActive else {
            // Closed before the request went out (an inactive channel tells its handlers
            // nothing more, so say it here).
            receiver.upstreamFailed(reused ? .staleConnection : .failed("connection closed"))
            return
        }
        self.receiver = receiver
        state.requestSent(now: pool.eventLoop.now, reused: reused)
        if timer == nil { armTimer(in: pool.timeout) }  // one left from an earlier request fires early and re-arms
        let (head, rest) = Self.encode(request, body: body, allocator: context.channel.allocator)
        // writeAndFlush: one trip down the pipeline for the last write and the flush.
        if let rest {
            context.write(wrapOutboundOut(head), promise: nil)
            context.writeAndFlush(wrapOutboundOut(rest), promise: nil)
        } else {
            context.writeAndFlush(wrapOutboundOut(head), promise: nil)
        }
    }

    /// Sends the head of an upload (``UpstreamRequest/uploadContentType``); its body follows
    /// in ``writeBodyChunk(_:)`` calls and ends with ``endBody()``. The upstream timeout
    /// counts from the body's last byte.
    func sendHead(_ request: UpstreamRequest, to receiver: any UpstreamResponseHandling, reused: Bool) {
        send(request, body: ByteBuffer(), to: receiver, reused: reused)
        state.uploadStarted()
    }

    /// One piece of an upload's body, as a chunk (flushed at once: the client's read pace is
    /// the upload's).
    func writeBodyChunk(_ bytes: [UInt8]) {
        guard let context, !bytes.isEmpty else { return }
        state.bodyWritten(now: pool.eventLoop.now)
        var chunk = context.channel.allocator.buffer(capacity: bytes.count + 12)
        chunk.writeString(String(bytes.count, radix: 16))
        chunk.writeStaticString("\r\n")
        chunk.writeBytes(bytes)
        chunk.writeStaticString("\r\n")
        context.writeAndFlush(wrapOutboundOut(chunk), promise: nil)
    }

    /// The upload's body is over: its last chunk.
    func endBody() {
        guard let context else { return }
        state.bodyEnded(now: pool.eventLoop.now)
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(staticString: "0\r\n\r\n")), promise: nil)
    }

    /// The upstream's socket takes more (an upload waits for it while it is full).
    var isWritable: Bool { context?.channel.isWritable ?? false }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { receiver?.upstreamWritable() }
        context.fireChannelWritabilityChanged()
    }

    /// A request as bytes: the head, with the body behind it up to ``copyLimit``; a larger
    /// body is returned as it is, to be written after the head.
    static func encode(_ request: UpstreamRequest, body: ByteBuffer, allocator: ByteBufferAllocator) -> (ByteBuffer, ByteBuffer?) {
        let copyBody = body.readableBytes <= copyLimit
        var out = allocator.buffer(capacity: 512 + (copyBody ? body.readableBytes : 0))
        out.writeHead { head in
            head.append(request.method)
            head.append(" ")
            head.append(request.pathPrefix)
            head.append(request.route)
            head.append(" HTTP/1.1\r\n")
            head.field("host", request.host)
            if let upload = request.uploadContentType {
                head.field("content-type", upload)
                head.append("transfer-encoding: chunked")
            } else {
                head.append("content-type: application/json\r\ncontent-length: ")
                head.append(decimal: body.readableBytes)
            }
            head.append(request.acceptsEventStream ? "\r\naccept: text/event-stream\r\n" : "\r\naccept: application/json\r\n")
            head.field("x-request-id", request.requestID)
            if let version = request.anthropicVersion { head.field("anthropic-version", version) }
            if let authorization = request.authorization { head.field("authorization", authorization) }
            head.append("\r\n")
        }
        guard copyBody else { return (out, body) }
        out.writeImmutableBuffer(body)
        return (out, nil)
    }

    /// The client went away: drop the response and close, which makes vLLM abort the
    /// generation.
    func abandon() {
        receiver = nil
        state.abandoned()
        close()
    }

    func close() {
        timer?.cancel()
        timer = nil
        context?.close(promise: nil)
    }

    /// Stops reading from the upstream (the client is not taking data).
    func pauseReading() { state.pause() }

    /// Reads again (the client can take data).
    func resumeReading() {
        if state.resumed(now: pool.eventLoop.now), let context { context.read() }
    }

    // MARK: ChannelHandler

    func read(context: ChannelHandlerContext) {
        if state.readRequested() { context.read() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard state.bytesArrived(now: pool.eventLoop.now, parserIdle: parser.isIdle) else {
            closeUnsolicited()
            return
        }
        parser.feed(unwrapInboundIn(data))
        do throws(HTTP1ParseError) {
            while context.channel.isActive, let part = try parser.next() { received(part, context: context) }
        } catch {
            state.failing(because: "\(error)")
            context.close(promise: nil)
        }
    }

    /// Bytes with no request waiting for them (on an idle pooled connection, or after the
    /// answer just read ended): the upstream is out of step with this connection, which is
    /// closed and never reused.
    private func closeUnsolicited() {
        pool.closed(self)
        close()
    }

    private func received(_ part: HTTPPart<UpstreamResponseHead, ByteBuffer>, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            switch state.head(status: head.status, keepAlive: head.keepsConnectionAlive, now: pool.eventLoop.now) {
            case .deliver: receiver?.upstreamHead(head)
            case .skip: break
            case .close: context.close(promise: nil)
            case .unsolicited: closeUnsolicited()
            }
        case .body(let buffer):
            receiver?.upstreamBody(buffer)
        case .end:
            let action = state.end(parserIdle: parser.isIdle, channelActive: context.channel.isActive, now: pool.eventLoop.now)
            guard case .ended(let deliver, let reuse, let read) = action else { return }
            let receiver = deliver ? self.receiver : nil
            self.receiver = nil
            if read { context.read() }
            if reuse {
                pool.release(self)  // back first: the response's end may start the client's next request
            } else {
                close()
            }
            receiver?.upstreamEnd()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        receiver?.upstreamReadComplete()
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state.failing(because: "\(error)")
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A body delimited by the close ends here.
        if let end = parser.finish() { received(end, context: context) }
        timer?.cancel()
        timer = nil
        pool.closed(self)
        let receiver = self.receiver
        self.receiver = nil
        if let failure = state.closed() { receiver?.upstreamFailed(failure) }
        context.fireChannelInactive()
    }

    /// One timer per connection, not per request (scheduling and cancelling a task per
    /// request costs more than the rest of the bookkeeping): it stays armed across requests,
    /// and when it fires it checks the time of the last read and either fails the request
    /// under way, waits out the rest, or (idle) lapses until the next request arms it.
    private func armTimer(in amount: TimeAmount) {
        timer?.cancel()
        timer = pool.eventLoop.assumeIsolated().scheduleTask(in: amount) { [self] in
            timer = nil
            switch state.timerFired(now: pool.eventLoop.now, timeout: pool.timeout) {
            case .lapse:
                break
            case .rearm(let rest):
                armTimer(in: rest)
            case .timedOut:
                let receiver = self.receiver
                self.receiver = nil
                close()
                receiver?.upstreamFailed(.timeout)
            }
        }
    }
}
