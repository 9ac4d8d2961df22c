import HTTP1
import NIOCore
import NIOHTTP1
import Shared

/// Writes one response on a client connection, adding what every response carries
/// (`x-request-id`, `x-ratelimit-*`, `connection: close` when the connection ends after
/// it), and records what was sent for the access log. It writes HTTP/1.1 itself (status
/// line, headers, chunked framing) into one buffer per flush: no encoder in the pipeline.
///
/// Loop-bound, like the ``GatewayConnection`` that owns it: every call happens on the
/// connection's event loop. Writes are not flushed until ``flush()`` (or a whole-response
/// ``send(status:headers:body:)``), so the head and body of a response leave in one
/// `writev`. A stream's producer checks ``isWritable`` and waits for ``onWritable`` while
/// the client is slow, so a slow client slows the upstream instead of filling memory.
final class ResponseWriter {
    private let connection: GatewayConnection
    private let context: ChannelHandlerContext
    /// What is known about the request beyond its bytes (id, access-log fields, headers).
    var request: RequestContext
    var requestID: String { request.requestID }
    let version: HTTPVersion
    /// False once the connection must close after this response.
    private(set) var keepAlive: Bool
    private(set) var status: Int = 0
    private(set) var headSent = false
    private(set) var isComplete = false
    /// The client's connection closed before the response was complete.
    private(set) var clientGone = false
    private(set) var bodyBytes = 0
    /// The request was `HEAD`: no body may follow the headers.
    let isHead: Bool
    /// How errors are written: the shape of the route's API family (OpenAI's for the
    /// gateway's own routes).
    let errorShape: APIFamily.ErrorShape
    /// The head said `transfer-encoding: chunked`.
    private var chunked = false
    /// Body bytes may follow the head (not for `HEAD`, 1xx, 204, 304).
    private var bodyAllowed = false
    /// Bytes assembled for the next write to the socket.
    private var pending: ByteBuffer?
    /// Small body pieces of a chunked response written since the last flush: they leave
    /// as one chunk (a stream relayed read by read sends one chunk per upstream read, not
    /// one per SSE event, and the client parses one chunk header for them).
    private var openChunk: ByteBuffer?

    /// What produces this response over time (a proxied exchange), told once if the client
    /// hangs up or the drain timeout comes before the response is complete. Held until the
    /// response ends (a reference, not a closure: nothing to allocate per request).
    var producer: (any ResponseProducer)?
    /// Called when the client can take data again after ``isWritable`` was false.
    var onWritable: (() -> Void)?

    init(
        connection: GatewayConnection, context: ChannelHandlerContext, requestID: String, keepAlive: Bool, version: HTTPVersion, isHead: Bool,
        errorShape: APIFamily.ErrorShape = .openAI
    ) {
        self.connection = connection
        self.context = context
        self.request = RequestContext(requestID: requestID)
        self.keepAlive = keepAlive
        self.version = version
        self.isHead = isHead
        self.errorShape = errorShape
    }

    var eventLoop: any EventLoop { context.eventLoop }

    /// The connection's allocator (for a body assembled in place).
    var allocator: ByteBufferAllocator { context.channel.allocator }

    /// True while the client's socket takes data without queuing in the gateway.
    var isWritable: Bool { context.channel.isWritable }

    /// Makes this the connection's last response.
    func forceClose() { keepAlive = false }

    /// The worker's drain timeout is over: the connection closes after this response, and
    /// its producer, if it said how, ends it now.
    func drainDeadlineReached() {
        guard !isComplete, !clientGone else { return }
        keepAlive = false
        let producer = self.producer
        self.producer = nil
        producer?.drainDeadlineReached()
    }

    /// The client hung up: status 499 in logs and metrics (unless a head was already sent),
    /// and whoever produces the response stops.
    func clientClosed() {
        guard !isComplete, !clientGone else { return }
        clientGone = true
        keepAlive = false
        if !headSent { status = 499 }
        request.logFields.error = "client_closed_request"
        let producer = self.producer
        self.producer = nil
        onWritable = nil
        producer?.clientGone()
    }

    /// Sends the status line and headers (not flushed); the body follows with ``write(_:)``.
    ///
    /// The gateway frames its responses itself: with `content-length` when the caller set
    /// one, else chunked (HTTP/1.1) or to the end of the connection (HTTP/1.0).
    func writeHead(status: Int, headers: HTTPHeaders, reservingBody bodyCapacity: Int = 0) {
        guard var out = startHead(status: status, hasLength: headers.contains(name: "content-length"), reservingBody: bodyCapacity)
        else { return }
        let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
        out.writeHead { head in
            head.statusLine(status, version: version, reason: reason)
            for (name, value) in headers { head.field(name, value) }
            commonFields(&head)
        }
        pending = out
    }

    /// The head of an event stream (200, chunked, not cached or buffered by proxies on the
    /// way), written without building `HTTPHeaders`: relayed streams and the demo model's.
    func writeEventStreamHead() {
        guard var out = startHead(status: 200, hasLength: false, reservingBody: 0) else { return }
        out.writeHead { head in
            head.statusLine(200, version: version, reason: "OK")
            head.append("content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\n")
            commonFields(&head)
        }
        pending = out
    }

    /// The bookkeeping of a head (framing, keep-alive) and the buffer it goes into; nil
    /// when the client is gone. The caller writes the status line, its own fields and
    /// ``commonFields(_:)`` into it, and leaves it in `pending`.
    private func startHead(status: Int, hasLength: Bool, reservingBody bodyCapacity: Int) -> ByteBuffer? {
        precondition(!headSent, "response head written twice")
        if connection.isDraining { keepAlive = false }
        let mayHaveBody = status >= 200 && status != 204 && status != 304
        if mayHaveBody && !hasLength {
            if version.major == 1 && version.minor == 0 {
                keepAlive = false  // an HTTP/1.0 body without a length ends with the connection
            } else {
                chunked = true
            }
        }
        bodyAllowed = mayHaveBody && !isHead
        self.status = status
        headSent = true
        guard !clientGone else { return nil }
        return context.channel.allocator.buffer(capacity: 256 + min(bodyCapacity, Self.copyLimit + 16))
    }

    /// The fields every response carries, and the blank line that ends the head.
    private func commonFields(_ head: inout HeadBytes) {
        head.field("x-request-id", requestID)
        for (name, value) in request.extraHeaders { head.field(name, value) }
        if !keepAlive {
            head.append("connection: close\r\n")
        } else if version.major == 1 && version.minor == 0 {
            head.append("connection: keep-alive\r\n")
        }
        if chunked { head.append("transfer-encoding: chunked\r\n") }
        head.append("\r\n")
    }

    /// Queues body bytes (sent at the next ``flush()``). A `HEAD` request gets the headers
    /// only. Small pieces are copied behind the head, so a whole response is one buffer;
    /// in a chunked body the small pieces between two flushes make one chunk. Large pieces
    /// are queued as they are.
    func write(_ buffer: ByteBuffer) {
        bodyBytes += buffer.readableBytes
        guard bodyAllowed, !clientGone, buffer.readableBytes > 0 else { return }
        if chunked && buffer.readableBytes <= Self.copyLimit {
            guard var body = openChunk else {
                // The first piece is kept as it is (a relayed stream's read, usually the only
                // piece before the flush): it is copied once, behind its chunk size, when
                // the chunk closes. A second piece makes it a buffer of its own (copy on write).
                openChunk = buffer
                return
            }
            openChunk = nil  // uniquely referenced while appending
            body.writeImmutableBuffer(buffer)
            openChunk = body
            if body.readableBytes >= Self.copyLimit { closeChunk() }
            return
        }
        closeChunk()
        var out = pending ?? context.channel.allocator.buffer(capacity: buffer.readableBytes + 16)
        pending = nil  // uniquely referenced while appending
        if chunked { Self.writeChunkSize(buffer.readableBytes, to: &out) }
        if buffer.readableBytes <= Self.copyLimit {
            out.writeImmutableBuffer(buffer)
        } else {
            if out.readableBytes > 0 { context.write(NIOAny(out), promise: nil) }
            context.write(NIOAny(buffer), promise: nil)
            out.clear()
        }
        if chunked { out.writeStaticString("\r\n") }
        pending = out
    }

    /// Frames the open chunk into the bytes queued for the socket.
    private func closeChunk() {
        guard let body = openChunk else { return }
        openChunk = nil
        var out = pending ?? context.channel.allocator.buffer(capacity: body.readableBytes + 16)
        pending = nil  // uniquely referenced while appending
        Self.writeChunkSize(body.readableBytes, to: &out)
        out.writeImmutableBuffer(body)
        out.writeStaticString("\r\n")
        pending = out
    }

    /// Body pieces up to this size are copied into the buffer being assembled.
    static let copyLimit = 16 * 1024

    private static func writeChunkSize(_ size: Int, to out: inout ByteBuffer) {
        out.writeHead { head in
            head.append(hex: size)
            head.append("\r\n")
        }
    }

    /// Sends what was queued.
    func flush() {
        guard !clientGone else { return }
        closeChunk()
        if let out = pending, out.readableBytes > 0 {
            pending = nil
            context.write(NIOAny(out), promise: nil)
        }
        context.flush()
    }

    /// What is left to send when the response ends: queued bytes and, for a chunked body,
    /// the last chunk. Called once, by the connection, after its bookkeeping.
    func takeRest() -> ByteBuffer? {
        guard !clientGone else { return nil }
        closeChunk()
        var out = pending ?? context.channel.allocator.buffer(capacity: 8)
        pending = nil
        if chunked && bodyAllowed { out.writeStaticString("0\r\n\r\n") }
        return out.readableBytes > 0 ? out : nil
    }

    /// Ends the response (and flushes it).
    func end() {
        guard !isComplete else { return }
        isComplete = true
        producer = nil
        onWritable = nil
        connection.responseEnded(self)
    }

    /// A whole response in one go, with `content-length`.
    func send(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: ByteBuffer) {
        var headers = headers
        headers.add(name: "content-length", value: String(body.readableBytes))
        writeHead(status: status, headers: headers, reservingBody: body.readableBytes)
        write(body)
        end()
    }

    /// A whole response with only a content type of its own (and what every response
    /// carries): the head is written without building `HTTPHeaders`. Proxied answers and
    /// the gateway's JSON go this way.
    func send(status: Int, contentType: String, body: ByteBuffer) {
        if var out = startHead(status: status, hasLength: true, reservingBody: body.readableBytes) {
            let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
            let length = body.readableBytes
            out.writeHead { head in
                head.statusLine(status, version: version, reason: reason)
                head.field("content-type", contentType)
                head.append("content-length: ")
                head.append(decimal: length)
                head.append("\r\n")
                commonFields(&head)
            }
            pending = out
        }
        write(body)
        end()
    }

    /// A JSON response.
    func sendJSON(status: Int, _ json: String, headers: HTTPHeaders = HTTPHeaders()) {
        guard headers.isEmpty else {
            var headers = headers
            headers.replaceOrAdd(name: "content-type", value: "application/json")
            send(status: status, headers: headers, body: ByteBuffer(string: json))
            return
        }
        send(status: status, contentType: "application/json", body: ByteBuffer(string: json))
    }

    /// An error in OpenAI's shape, with the error's own headers.
    func send(error: GatewayError, headers: HTTPHeaders = HTTPHeaders()) {
        var all = headers
        for (name, value) in error.headers { all.replaceOrAdd(name: name, value: value) }
        request.logFields.error = error.code ?? error.type
        sendJSON(status: error.status, errorShape.body(of: error), headers: all)
    }

    /// Runs `body` on the connection's event loop after `delay` (the demo model's pacing),
    /// unless the client hung up meanwhile.
    func schedule(in delay: TimeAmount, _ body: @escaping () -> Void) {
        context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            if !clientGone { body() }
        }
    }
}
