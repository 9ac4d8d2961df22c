import Atomics
import Logging
import NIOCore
import NIOHTTP1
import Shared

/// Turns a request into a response: route matching, then the route's handler. Built once
/// per worker; holds no per-request state.
final class RequestHandler: Sendable {
    let configuration: GatewayConfiguration
    let segment: SharedSegment
    let slot: WorkerSlot
    /// The worker's connections (drained on SIGTERM).
    let connections = ConnectionRegistry()
    private let accessLogger: Logger

    init(configuration: GatewayConfiguration, segment: SharedSegment, slot: WorkerSlot) {
        self.configuration = configuration
        self.segment = segment
        self.slot = slot
        self.accessLogger = Logger(label: "llm-gateway.access")
    }

    /// True while this worker or the whole gateway drains.
    var isDraining: Bool { connections.isDraining || segment.isDraining }

    func handle(_ request: GatewayRequest, writer: ResponseWriter) async {
        let method = request.head.method.rawValue
        if request.route == .other {
            await writer.send(error: .routeNotFound(method: method, path: Self.printablePath(request.head.uri)))
            return
        }
        guard method == request.route.method || (method == "HEAD" && request.route.method == "GET") else {
            await writer.send(error: .methodNotAllowed(method, allowed: [request.route.method]))
            return
        }
        switch request.route {
        case .health:
            await writer.sendJSON(status: 200, #"{"status":"ok"}"#)
        default:
            await writer.send(error: .routeNotFound(method: method, path: Self.printablePath(request.head.uri)))
        }
    }

    /// One structured line per request (never headers, keys or bodies).
    func logAccess(request head: HTTPRequestHead, route: Route, requestID: String, writer: ResponseWriter, start: MonotonicInstant) {
        guard accessLogger.logLevel <= .info else { return }
        var metadata: Logger.Metadata = [
            "request_id": .string(requestID),
            "method": .string(Self.methodLabel(head.method)),
            "route": .string(route.template),
            "status": .stringConvertible(writer.status),
            "duration_ms": .stringConvertible((MonotonicInstant.now().seconds(since: start) * 1e6).rounded() / 1e3),
            "bytes": .stringConvertible(writer.bodyBytes),
        ]
        for (key, value) in writer.logFields { metadata[key] = .string(value) }
        accessLogger.info("request", metadata: metadata)
    }

    static func methodLabel(_ method: HTTPMethod) -> String {
        switch method {
        case .GET, .POST, .HEAD, .PUT, .DELETE, .OPTIONS, .PATCH: method.rawValue
        default: "other"
        }
    }

    /// The path as an error message may echo it: at most 200 printable ASCII characters.
    static func printablePath(_ uri: String) -> String {
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        let printable = path.unicodeScalars.map { $0.value >= 0x20 && $0.value < 0x7F ? Character($0) : "?" }
        return String(printable.prefix(200))
    }
}
