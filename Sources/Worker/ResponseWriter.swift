import NIOCore
import NIOHTTP1
import Shared

/// Writes one response on a client connection, adding what every response carries
/// (`x-request-id`, `x-ratelimit-*`, `connection: close` when the connection ends after
/// it), and records what was sent for the access log.
///
/// Loop-bound, like the ``GatewayConnection`` that owns it: every call happens on the
/// connection's event loop. Writes are not flushed until ``flush()`` (or a whole-response
/// ``send(status:headers:body:)``), so the head and body of a response leave in one
/// `writev`. A stream's producer checks ``isWritable`` and waits for ``onWritable`` while
/// the client is slow, so a slow client slows the upstream instead of filling memory.
final class ResponseWriter {
    private let connection: GatewayConnection
    private let context: ChannelHandlerContext
    let requestID: String
    let version: HTTPVersion
    /// False once the connection must close after this response.
    private(set) var keepAlive: Bool
    private(set) var status: Int = 0
    private(set) var headSent = false
    private(set) var isComplete = false
    /// The client's connection closed before the response was complete.
    private(set) var clientGone = false
    private(set) var bodyBytes = 0
    /// Extra fields the handler wants in the access log line (model, upstream, tokens).
    var logFields = AccessFields()
    /// Headers every response to this request carries (`x-ratelimit-*`).
    var extraHeaders: [(String, String)] = []
    /// The request was `HEAD`: no body may follow the headers.
    let isHead: Bool

    /// Called once if the client hangs up before the response is complete (cancels the
    /// upstream request).
    var onClientGone: (() -> Void)?
    /// Called when the client can take data again after ``isWritable`` was false.
    var onWritable: (() -> Void)?

    init(connection: GatewayConnection, context: ChannelHandlerContext, requestID: String, keepAlive: Bool, version: HTTPVersion, isHead: Bool) {
        self.connection = connection
        self.context = context
        self.requestID = requestID
        self.keepAlive = keepAlive
        self.version = version
        self.isHead = isHead
    }

    var eventLoop: any EventLoop { context.eventLoop }

    /// True while the client's socket takes data without queuing in the gateway.
    var isWritable: Bool { context.channel.isWritable }

    /// Makes this the connection's last response.
    func forceClose() { keepAlive = false }

    /// The client hung up: status 499 in logs and metrics (unless a head was already sent),
    /// and whoever produces the response stops.
    func clientClosed() {
        guard !isComplete, !clientGone else { return }
        clientGone = true
        keepAlive = false
        if !headSent { status = 499 }
        logFields.error = "client_closed_request"
        let gone = onClientGone
        onClientGone = nil
        onWritable = nil
        gone?()
    }

    /// Sends the status line and headers (not flushed); the body follows with ``write(_:)``.
    func writeHead(status: Int, headers: HTTPHeaders) {
        precondition(!headSent, "response head written twice")
        var headers = headers
        // `add`, not `replaceOrAdd`: no caller sets these, and each replace scans the list.
        headers.add(name: "x-request-id", value: requestID)
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        if connection.isDraining { keepAlive = false }
        if !keepAlive {
            headers.add(name: "connection", value: "close")
        } else if version == .http1_0 {
            headers.add(name: "connection", value: "keep-alive")
        }
        self.status = status
        headSent = true
        guard !clientGone else { return }
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: status), headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
    }

    /// Queues one body chunk (sent at the next ``flush()``). A `HEAD` request gets the
    /// headers only.
    func write(_ buffer: ByteBuffer) {
        bodyBytes += buffer.readableBytes
        guard !isHead, !clientGone, buffer.readableBytes > 0 else { return }
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer))), promise: nil)
    }

    /// Sends what was queued.
    func flush() {
        guard !clientGone else { return }
        context.flush()
    }

    /// Ends the response (and flushes it).
    func end() {
        guard !isComplete else { return }
        isComplete = true
        onClientGone = nil
        onWritable = nil
        connection.responseEnded(self)
    }

    /// A whole response in one go, with `content-length`.
    func send(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: ByteBuffer) {
        var headers = headers
        headers.add(name: "content-length", value: String(body.readableBytes))
        writeHead(status: status, headers: headers)
        write(body)
        end()
    }

    /// A JSON response.
    func sendJSON(status: Int, _ json: String, headers: HTTPHeaders = HTTPHeaders()) {
        var headers = headers
        headers.replaceOrAdd(name: "content-type", value: "application/json")
        send(status: status, headers: headers, body: ByteBuffer(string: json))
    }

    /// An error in OpenAI's shape, with the error's own headers.
    func send(error: GatewayError, headers: HTTPHeaders = HTTPHeaders()) {
        var all = headers
        for (name, value) in error.headers { all.replaceOrAdd(name: name, value: value) }
        logFields.error = error.code ?? error.type
        sendJSON(status: error.status, error.jsonBody, headers: all)
    }

    /// Runs `body` on the connection's event loop after `delay` (the demo model's pacing),
    /// unless the client hung up meanwhile.
    func schedule(in delay: TimeAmount, _ body: @escaping () -> Void) {
        context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            if !clientGone { body() }
        }
    }
}
