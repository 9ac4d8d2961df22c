import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Shared

/// How an upstream exchange failed.
enum UpstreamFailure: Error, Equatable {
    /// Could not connect (refused, unreachable, connect timeout): the upstream is down.
    case unreachable(String)
    /// No response head (or, mid-response, no byte) within the upstream's timeout.
    case timeout
    /// The connection broke (reset, closed, protocol error).
    case failed(String)
    /// A kept-alive connection closed before answering: the upstream had timed it out just
    /// as it was reused. Nothing reached the upstream's application; a fresh connection
    /// may send the request again.
    case staleConnection
    /// The gateway itself ran out of something a connection needs (file descriptors,
    /// socket buffers, local ports): not the upstream's fault, and never counted against it.
    case localResources(String)
}

/// What receives one upstream response. Every call comes on the worker's event loop, in
/// order: `head`, `body`…, then exactly one of `end` or `failed`.
protocol UpstreamResponseHandling: AnyObject {
    func upstreamHead(_ head: UpstreamResponseHead)
    func upstreamBody(_ buffer: ByteBuffer)
    /// A burst of reads is over: what was written to the client can be flushed now.
    func upstreamReadComplete()
    func upstreamEnd()
    func upstreamFailed(_ failure: UpstreamFailure)
}

/// The worker's keep-alive connections to one upstream, on its only event loop.
///
/// Loop-bound: every method runs on `eventLoop` (the worker has one loop, and the client
/// connections that use the pool run on it too). Idle connections are reused newest first
/// and never after ``idleTimeout`` (`UPSTREAM_KEEPALIVE_TIMEOUT`, 4 s by default: shorter
/// than vLLM's (uvicorn's) own 5 s keep-alive timeout, so the gateway, not the upstream,
/// normally closes them). One the upstream closed anyway (a race at reuse) fails with
/// ``UpstreamFailure/staleConnection`` and the request is sent again on a fresh connection.
final class UpstreamPool {
    let url: UpstreamURL
    let eventLoop: any EventLoop
    let connectTimeout: TimeAmount
    /// Longest wait for the response head, and then between two reads of the body.
    let timeout: TimeAmount
    /// `Authorization` sent upstream (a cloud fallback's key, from the environment; never logged).
    let authorization: String?
    /// `Host` header value.
    let hostHeader: String
    private let tls: NIOSSLContext?
    private let serverHostname: String?
    /// The upstream's address when its URL names an IP literal (vLLM on 127.0.0.1): a
    /// connect goes straight to it, without NIO's resolver and Happy Eyeballs connector
    /// (`getaddrinfo` per address family on a dispatch queue and back, and their timers).
    private let address: SocketAddress?

    /// How long an idle connection may wait for its next request; zero = none is kept.
    let idleTimeout: TimeAmount
    /// How often idle connections are looked at to close the expired ones.
    private let sweepInterval: TimeAmount
    /// Idle connections kept at most (more are closed when returned).
    static let maxIdle = 1024

    /// Newest last; `idleSince` ascends from the front.
    private var idle: [UpstreamConnection] = []
    private var sweeper: Scheduled<Void>?

    init(
        url: UpstreamURL, eventLoop: any EventLoop, connectTimeout: Double,
        timeout: Double, idleTimeout: Double, authorization: String?, tls: NIOSSLContext?
    ) {
        self.url = url
        self.eventLoop = eventLoop
        self.connectTimeout = .milliseconds(Int64(connectTimeout * 1000))
        self.timeout = .milliseconds(Int64(timeout * 1000))
        self.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        // Closed within a quarter of the limit past it (at most a second).
        self.sweepInterval = .milliseconds(max(10, min(1000, Int64(idleTimeout * 250))))
        self.authorization = authorization
        let defaultPort = url.scheme == "https" ? 443 : 80
        let host = url.host.contains(":") ? "[\(url.host)]" : url.host
        self.hostHeader = url.port == defaultPort ? host : "\(host):\(url.port)"
        self.tls = url.scheme == "https" ? tls : nil
        let address = try? SocketAddress(ipAddress: url.host, port: url.port)
        self.address = address
        // SNI takes a name, never an address literal.
        self.serverHostname = address == nil ? url.host : nil
    }

    /// A connection for one request, in two steps: the newest usable idle one, if any
    /// (synchronous: no callback to allocate on the usual path; a reused connection may
    /// turn out ``UpstreamFailure/staleConnection``), else ``connect(_:)``. One idle for
    /// ``idleTimeout`` or longer is not handed out even if the sweep has not closed it yet:
    /// the upstream may be closing it. `now` is the caller's reading of the monotonic clock
    /// (the request's send time), so the check costs no clock read of its own.
    func takeIdle(now: NIODeadline) -> UpstreamConnection? {
        eventLoop.preconditionInEventLoop()
        guard let newest = idle.last else { return nil }
        if now - newest.idleSince >= idleTimeout {
            // The newest is expired, so are all the others.
            closeIdle(count: idle.count)
            return nil
        }
        while let connection = idle.popLast() {
            if connection.isUsable { return connection }
        }
        return nil
    }

    /// A new connection, handed to `completion` on the event loop.
    func connect(_ completion: @escaping (Result<UpstreamConnection, UpstreamFailure>) -> Void) {
        let tls = self.tls
        let serverHostname = self.serverHostname
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                    }
                }
            }
        let connecting = address.map { bootstrap.connect(to: $0) } ?? bootstrap.connect(host: url.host, port: url.port)
        connecting.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                let connection = UpstreamConnection(pool: self)
                do {
                    try channel.pipeline.syncOperations.addHandler(connection)
                    completion(.success(connection))
                } catch {
                    channel.close(promise: nil)
                    completion(.failure(.failed("\(error)")))
                }
            case .failure(let error):
                completion(.failure(Self.failure(connecting: error)))
            }
        }
    }

    /// A failed connect as the exchange sees it: the upstream unreachable, or (EMFILE and
    /// friends, from `socket()` or `connect()` on this host) the gateway out of resources.
    static func failure(connecting error: any Error) -> UpstreamFailure {
        if let errno = localResourceErrno(error) {
            return .localResources(errno == EADDRNOTAVAIL ? "no free local port" : "errno \(errno): \(String(cString: strerror(errno)))")
        }
        return .unreachable(describeConnectFailure(error))
    }

    /// The errno of a connect failure caused by this host's limits, if it was one.
    static func localResourceErrno(_ error: any Error) -> Int32? {
        if let error = error as? NIOConnectionError {
            return error.connectionErrors.lazy.compactMap { localResourceErrno($0.error) }.first
        }
        if let error = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL].contains(error.errnoCode) {
            return error.errnoCode
        }
        return nil
    }

    /// Why a connect failed, in a few words (NIO's error types, not their text).
    static func describeConnectFailure(_ error: any Error) -> String {
        if let error = error as? ChannelError, case .connectTimeout = error { return "connect timeout" }
        if let error = error as? NIOConnectionError {
            let errors = error.connectionErrors.map(\.error) + [error.dnsAError, error.dnsAAAAError].compactMap { $0 }
            if let first = errors.first { return describeConnectFailure(first) }
            return "no address for \(error.host)"
        }
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED: return "connection refused"
            case ENETUNREACH, EHOSTUNREACH: return "no route to host"
            case ETIMEDOUT: return "connect timeout"
            default: return "connect failed, errno \(error.errnoCode)"
            }
        }
        return "connect failed"
    }

    /// Takes back a connection whose response ended with keep-alive.
    func release(_ connection: UpstreamConnection) {
        guard idle.count < Self.maxIdle, idleTimeout.nanoseconds > 0 else {
            connection.close()
            return
        }
        // Released from the read that ended its response: that read's time, without
        // asking the clock again.
        connection.idleSince = connection.lastActivity
        idle.append(connection)
        if sweeper == nil { scheduleSweep() }
    }

    /// A connection closed: forget it if it was idle.
    func closed(_ connection: UpstreamConnection) {
        if let position = idle.lastIndex(where: { $0 === connection }) { idle.remove(at: position) }
    }

    /// Sweeps every ``sweepInterval`` while connections are idle.
    private func scheduleSweep() {
        sweeper = eventLoop.assumeIsolated().scheduleTask(in: sweepInterval) { [self] in
            sweep()
            if idle.isEmpty { sweeper = nil } else { scheduleSweep() }
        }
    }

    /// Closes connections idle for ``idleTimeout`` (the oldest are at the front).
    private func sweep() {
        let now = eventLoop.now
        var expired = 0
        while expired < idle.count, now - idle[expired].idleSince >= idleTimeout { expired += 1 }
        closeIdle(count: expired)
    }

    /// Closes the `count` oldest idle connections.
    private func closeIdle(count: Int) {
        guard count > 0 else { return }
        let closing = idle[..<count]
        idle.removeFirst(count)
        for connection in closing { connection.close() }
    }

    /// Closes every idle connection (worker shutdown).
    func shutdown() {
        sweeper?.cancel()
        sweeper = nil
        let closing = idle
        idle.removeAll()
        for connection in closing { connection.close() }
    }
}

/// What the gateway asks an upstream: always a `POST` of a JSON body over HTTP/1.1, so the
/// head is written straight from these fields (no `HTTPHeaders` per request). Every value
/// is the gateway's own (configuration, route templates, a checked request id), so none
/// holds CR or LF.
struct UpstreamRequest {
    /// The upstream URL's path (`""` or `/something`, no trailing slash).
    var pathPrefix: String
    /// The route's path (`/v1/chat/completions`).
    var route: String
    /// `Host` header value.
    var host: String
    /// `accept: text/event-stream` (a streamed request) rather than `application/json`.
    var acceptsEventStream: Bool
    var requestID: String
    /// A cloud fallback's `Authorization` (never logged).
    var authorization: String?
}

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
        guard receiver != nil || !parser.isIdle || !closeIfUnsolicited(context: context) else { return }
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
    private func closeIfUnsolicited(context: ChannelHandlerContext) -> Bool {
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
                _ = closeIfUnsolicited(context: context)
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

/// The worker's pools, one per upstream (none for the demo upstream).
///
/// `@unchecked Sendable`: built once per worker and then used only on the worker's event
/// loop (``UpstreamPool/takeIdle()`` checks it).
final class UpstreamPools: @unchecked Sendable {
    private let pools: [UpstreamPool?]
    /// The worker's event loop, where every pool (and every client connection) lives.
    let eventLoop: any EventLoop

    init(configuration: GatewayConfiguration, eventLoop: any EventLoop, environment: [String: String]) throws {
        let needsTLS = configuration.upstreams.contains { UpstreamURL(parsing: $0.url)?.scheme == "https" }
        let tls = needsTLS ? try NIOSSLContext(configuration: .makeClientConfiguration()) : nil
        self.eventLoop = eventLoop
        pools = configuration.upstreams.map { upstream in
            guard !upstream.isDemo, let url = UpstreamURL(parsing: upstream.url) else { return nil }
            let key = upstream.apiKeyEnv.flatMap { environment[$0] }.flatMap { $0.isEmpty ? nil : "Bearer \($0)" }
            return UpstreamPool(
                url: url, eventLoop: eventLoop,
                connectTimeout: upstream.connectTimeout ?? configuration.server.upstreamConnectTimeout,
                timeout: upstream.timeout ?? configuration.server.upstreamTimeout,
                idleTimeout: upstream.keepAliveTimeout ?? configuration.server.upstreamKeepAliveTimeout,
                authorization: key, tls: tls)
        }
    }

    subscript(index: Int) -> UpstreamPool? { pools[index] }

    /// Closes the idle connections (on the pools' event loop).
    func shutdown() {
        for pool in pools { pool?.shutdown() }
    }
}
