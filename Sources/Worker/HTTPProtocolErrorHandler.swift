import NIOCore
import NIOHTTP1
import Shared

/// Answers a request NIO's HTTP parser refuses (garbage request line, oversized headers,
/// bad chunked framing) with an OpenAI-shaped error instead of an empty 400, then closes:
/// the connection's framing can no longer be trusted.
final class HTTPProtocolErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var responseInProgress = false
    /// A response said `connection: close`: what the client sends after it is not answered.
    private var closing = false
    private let metrics: GatewayMetrics

    init(metrics: GatewayMetrics) { self.metrics = metrics }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if !responseInProgress && !closing && context.channel.isActive {
            let gatewayError: GatewayError
            let status: Int
            switch parserError {
            case .headerOverflow:
                gatewayError = .badRequest("Request line or headers too large.", code: "headers_too_large")
                status = 431
            default:
                gatewayError = .badRequest("Malformed HTTP request.", code: "bad_http")
                status = 400
            }
            let body = ByteBuffer(string: gatewayError.jsonBody)
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/json")
            headers.add(name: "content-length", value: String(body.readableBytes))
            headers.add(name: "connection", value: "close")
            let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            // Counted like any answered request (the route is unknown: `other`).
            metrics.request(route: .other, method: "other", status: status, seconds: 0)
        }
        context.close(promise: nil)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            responseInProgress = true
            if head.headers.first(name: "connection")?.lowercased() == "close" { closing = true }
        case .end: responseInProgress = false
        default: break
        }
        context.write(data, promise: promise)
    }
}
