import Atomics
import Logging
import NIOCore
import NIOHTTP1
import Shared

/// One client connection: reads requests in order (keep-alive, pipelining-safe behind
/// NIO's `HTTPServerPipelineHandler`), bounds each body, hands it to the
/// ``RequestHandler`` and writes its response with backpressure.
struct HTTPConnection {
    let channel: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>
    let handler: RequestHandler
    let registry: ConnectionRegistry
    let maxBodyBytes: Int
    let logger: Logger

    func run() async {
        registry.register(channel.channel)
        defer { registry.unregister(channel.channel) }
        let disconnect = ClientDisconnect(closeFuture: channel.channel.closeFuture)
        do {
            try await channel.executeThenClose { inbound, outbound in
                var parts = inbound.makeAsyncIterator()
                while let part = try await parts.next() {
                    guard case .head(let head) = part else { continue }
                    registry.requestStarted(on: channel.channel)
                    let start = MonotonicInstant.now()
                    let requestID = RequestID.make(from: head.headers)
                    let route = Route(path: head.uri)
                    let writer = ResponseWriter(
                        outbound: outbound, requestID: requestID, keepAlive: head.isKeepAlive, version: head.version,
                        draining: registry, isHead: head.method == .HEAD)

                    switch try await readBody(head: head, parts: &parts, outbound: outbound) {
                    case .complete(let body):
                        let request = GatewayRequest(
                            head: head, route: route, body: body, requestID: requestID, disconnect: disconnect)
                        await handler.handle(request, writer: writer)
                    case .tooLarge:
                        writer.forceClose()
                        await writer.send(error: .payloadTooLarge(limit: maxBodyBytes))
                    case .ended:
                        return
                    }
                    if !writer.isComplete {
                        writer.forceClose()
                        if !channel.channel.isActive {
                            writer.clientClosedRequest()  // logged and counted as 499, as nginx does
                        } else if !writer.headSent {
                            await writer.send(error: .internalError())  // the handler failed to answer
                        }
                    }
                    handler.finished(request: head, route: route, requestID: requestID, writer: writer, start: start)
                    let drainingNow = registry.requestFinished(on: channel.channel)
                    if !writer.keepAlive || drainingNow { return }
                }
            }
        } catch {
            logger.debug("connection ended: \(error)")
        }
    }

    enum Body {
        case complete(ByteBuffer)
        case tooLarge
        case ended
    }

    /// Reads the request body, refusing one over the limit as soon as it is known
    /// (from `Content-Length`, or while a chunked body arrives) without reading the rest.
    func readBody(
        head: HTTPRequestHead, parts: inout NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws -> Body {
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
            return .tooLarge
        }
        if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
            try await outbound.write(.head(HTTPResponseHead(version: head.version, status: .continue)))
        }
        var body = ByteBuffer()
        while let part = try await parts.next() {
            switch part {
            case .body(var chunk):
                if body.readableBytes + chunk.readableBytes > maxBodyBytes { return .tooLarge }
                body.writeBuffer(&chunk)
            case .end:
                return .complete(body)
            case .head:
                return .ended
            }
        }
        return .ended
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
