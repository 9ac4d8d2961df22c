import NIOCore
import NIOHTTP1
import Shared

/// Writes one response on a connection, adding what every response carries
/// (`x-request-id`, `connection: close` when the connection ends after it), and records
/// what was sent for the access log. Each write waits for the channel to be writable, so a
/// slow client slows the producer instead of filling memory.
///
/// `@unchecked Sendable`: one request's task uses it at a time (the connection awaits the
/// proxy task that writes through it before touching it again).
final class ResponseWriter: @unchecked Sendable {
    private let outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    let requestID: String
    let version: HTTPVersion
    /// False once the connection must close after this response.
    private(set) var keepAlive: Bool
    private(set) var status: Int = 0
    private(set) var headSent = false
    private(set) var isComplete = false
    private(set) var bodyBytes = 0
    /// Extra fields the handler wants in the access log line (model, upstream, tokens).
    var logFields: [String: String] = [:]
    /// Headers every response to this request carries (`x-ratelimit-*`).
    var extraHeaders: [(String, String)] = []

    private let draining: ConnectionRegistry
    /// The request was `HEAD`: no body may follow the headers.
    let isHead: Bool

    init(
        outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, requestID: String, keepAlive: Bool,
        version: HTTPVersion, draining: ConnectionRegistry, isHead: Bool = false
    ) {
        self.outbound = outbound
        self.isHead = isHead
        self.draining = draining
        self.requestID = requestID
        self.keepAlive = keepAlive
        self.version = version
    }

    /// Makes this the connection's last response.
    func forceClose() { keepAlive = false }

    /// The client hung up before the response was complete (status 499 in logs and metrics,
    /// unless a head was already sent).
    func clientClosedRequest() {
        if !headSent { status = 499 }
        logFields["error"] = "client_closed_request"
    }

    /// Sends the status line and headers; the body follows with ``write(_:)``.
    func writeHead(status: Int, headers: HTTPHeaders) async throws {
        precondition(!headSent, "response head written twice")
        var headers = headers
        headers.replaceOrAdd(name: "x-request-id", value: requestID)
        for (name, value) in extraHeaders { headers.replaceOrAdd(name: name, value: value) }
        if draining.isDraining { keepAlive = false }
        if !keepAlive {
            headers.replaceOrAdd(name: "connection", value: "close")
        } else if version == .http1_0 {
            headers.replaceOrAdd(name: "connection", value: "keep-alive")
        }
        self.status = status
        headSent = true
        try await outbound.write(.head(HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: status), headers: headers)))
    }

    /// Sends one body chunk (flushed at once: an SSE event leaves as soon as it is written).
    /// A `HEAD` request gets the headers only.
    func write(_ buffer: ByteBuffer) async throws {
        bodyBytes += buffer.readableBytes
        if isHead { return }
        try await outbound.write(.body(.byteBuffer(buffer)))
    }

    /// Ends the response.
    func end() async throws {
        try await outbound.write(.end(nil))
        isComplete = true
    }

    /// A whole response in one go, with `content-length`.
    func send(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: ByteBuffer) async {
        var headers = headers
        headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        do {
            try await writeHead(status: status, headers: headers)
            if body.readableBytes > 0 { try await write(body) }
            try await end()
        } catch {
            keepAlive = false
        }
    }

    /// A JSON response.
    func sendJSON(status: Int, _ json: String, headers: HTTPHeaders = HTTPHeaders()) async {
        var headers = headers
        headers.replaceOrAdd(name: "content-type", value: "application/json")
        await send(status: status, headers: headers, body: ByteBuffer(string: json))
    }

    /// An error in OpenAI's shape, with the error's own headers.
    func send(error: GatewayError, headers: HTTPHeaders = HTTPHeaders()) async {
        var all = headers
        for (name, value) in error.headers { all.replaceOrAdd(name: name, value: value) }
        logFields["error"] = error.code ?? error.type
        await sendJSON(status: error.status, error.jsonBody, headers: all)
    }
}
