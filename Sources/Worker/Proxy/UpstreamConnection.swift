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
    /// 1xx heads accepted before one answer's final head; more is a flood, and fails it.
    static let maxInformational = 8

    private let pool: UpstreamPool
    private var context: ChannelHandlerContext?
    private var receiver: (any UpstreamResponseHandling)?
    var idleSince = NIODeadline.uptimeNanoseconds(0)

    private var keepAlive = true
    /// A byte of an answer arrived (then a close is no stale keep-alive connection).
    private var receivedAny = false
    private var reused = false
    private var skippingInformational = false
    /// 1xx heads of the answer under way.
    private var informational = 0
    /// No final (≥ 200) head yet: the upstream timeout counts from ``requestSent``, not
    /// from the last read, so a trickle of bytes or 1xx heads cannot extend it.
    private var awaitingFinalHead = false
    private var requestSent = NIODeadline.uptimeNanoseconds(0)
    private var paused = false
    private var readPending = false
    /// The last read from the upstream, request sent or resume: the upstream timeout counts
    /// from it.
    private(set) var lastActivity = NIODeadline.uptimeNanoseconds(0)
    private var timer: Scheduled<Void>?
    private var closeReason: String?
    private var parser = HTTP1Parser<UpstreamResponseHead>()

    init(pool: UpstreamPool) { self.pool = pool }

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
        self.reused = reused
        keepAlive = true
        receivedAny = false
        skippingInformational = false
        informational = 0
        awaitingFinalHead = true
        lastActivity = pool.eventLoop.now
        requestSent = lastActivity
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

    /// A request as bytes: the head, with the body behind it up to ``copyLimit``; a larger
    /// body is returned as it is, to be written after the head.
    static func encode(_ request: UpstreamRequest, body: ByteBuffer, allocator: ByteBufferAllocator) -> (ByteBuffer, ByteBuffer?) {
        let copyBody = body.readableBytes <= copyLimit
        var out = allocator.buffer(capacity: 512 + (copyBody ? body.readableBytes : 0))
        out.writeHead { head in
            head.append("POST ")
            head.append(request.pathPrefix)
            head.append(request.route)
            head.append(" HTTP/1.1\r\n")
            head.field("host", request.host)
            head.append("content-type: application/json\r\ncontent-length: ")
            head.append(decimal: body.readableBytes)
            head.append(request.acceptsEventStream ? "\r\naccept: text/event-stream\r\n" : "\r\naccept: application/json\r\n")
            head.field("x-request-id", request.requestID)
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
        close()
    }

    func close() {
        timer?.cancel()
        timer = nil
        context?.close(promise: nil)
    }

    /// Stops reading from the upstream (the client is not taking data).
    func pauseReading() { paused = true }

    /// Reads again (the client can take data).
    func resumeReading() {
        guard paused else { return }
        paused = false
        lastActivity = pool.eventLoop.now
        if readPending, let context {
            readPending = false
            context.read()
        }
    }

    // MARK: ChannelHandler

    func read(context: ChannelHandlerContext) {
        if paused {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActivity = pool.eventLoop.now
        guard receiver != nil || !parser.isIdle || !closeIfUnsolicited() else { return }
        parser.feed(unwrapInboundIn(data))
        do throws(HTTP1ParseError) {
            while context.channel.isActive, let part = try parser.next() { received(part, context: context) }
        } catch {
            closeReason = "\(error)"
            context.close(promise: nil)
        }
    }

    /// Bytes with no request waiting for them (on an idle pooled connection, or after the
    /// answer just read ended): the upstream is out of step with this connection, which is
    /// closed and never reused. Returns true when it closed it.
    private func closeIfUnsolicited() -> Bool {
        guard receiver == nil else { return false }
        closeReason = "the upstream sent bytes no request asked for"
        pool.closed(self)
        close()
        return true
    }

    private func received(_ part: HTTPPart<UpstreamResponseHead, ByteBuffer>, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            if receiver == nil {
                // A response to nothing: a stray answer behind the one that just ended.
                _ = closeIfUnsolicited()
                return
            }
            receivedAny = true
            if head.status < 200 {
                // 100 Continue and friends: the real head follows, within the same deadline.
                informational += 1
                guard informational <= Self.maxInformational else {
                    closeReason = "more than \(Self.maxInformational) informational (1xx) answers"
                    context.close(promise: nil)
                    return
                }
                skippingInformational = true
                return
            }
            awaitingFinalHead = false
            lastActivity = pool.eventLoop.now
            keepAlive = head.keepsConnectionAlive
            receiver?.upstreamHead(head)
        case .body(let buffer):
            receiver?.upstreamBody(buffer)
        case .end:
            if skippingInformational {
                skippingInformational = false
                return
            }
            let receiver = self.receiver
            self.receiver = nil
            resumeReading()  // an idle connection keeps reading, to notice the upstream closing it
            // Bytes already behind the answer's end were asked for by nobody: not reused.
            if keepAlive && receiver != nil && context.channel.isActive && parser.isIdle {
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
        closeReason = "\(error)"
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A body delimited by the close ends here.
        if let end = parser.finish() { received(end, context: context) }
        timer?.cancel()
        timer = nil
        pool.closed(self)
        if let receiver {
            self.receiver = nil
            let failure: UpstreamFailure =
                receivedAny || !reused ? .failed(closeReason ?? "connection closed by the upstream") : .staleConnection
            receiver.upstreamFailed(failure)
        }
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
            guard receiver != nil else { return }
            if paused {
                // The client is slow, not the upstream: the timeout counts from the resume.
                lastActivity = pool.eventLoop.now
            }
            let quiet = pool.eventLoop.now - (awaitingFinalHead ? requestSent : lastActivity)
            if quiet < pool.timeout {
                armTimer(in: pool.timeout - quiet)
                return
            }
            let receiver = self.receiver
            self.receiver = nil
            close()
            receiver?.upstreamFailed(.timeout)
        }
    }
}
