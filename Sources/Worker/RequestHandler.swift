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
    let registry: ModelRegistry
    let proxy: ProxyHandler
    /// The worker's connections (drained on SIGTERM).
    let connections = ConnectionRegistry()
    private let accessLogger: Logger

    init(configuration: GatewayConfiguration, segment: SharedSegment, slot: WorkerSlot, client: UpstreamClient, logger: Logger) {
        self.configuration = configuration
        self.segment = segment
        self.slot = slot
        self.registry = ModelRegistry(configuration: configuration)
        self.proxy = ProxyHandler(registry: registry, client: client, segment: segment, slot: slot, demo: DemoModel(), logger: logger)
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
        case .ready:
            await ready(writer: writer)
        case .models:
            await models(writer: writer)
        case .chatCompletions, .completions, .embeddings:
            await proxied(request, writer: writer)
        case .metrics, .other:
            await writer.send(error: .routeNotFound(method: method, path: Self.printablePath(request.head.uri)))
        }
    }

    /// Runs the proxy in its own task, cancelled the moment the client's connection
    /// closes, so the upstream request is dropped (and vLLM aborts the generation) instead
    /// of being noticed only at the next write.
    private func proxied(_ request: GatewayRequest, writer: ResponseWriter) async {
        let proxy = self.proxy
        let task = Task { await proxy.handle(request, writer: writer) }
        request.clientClosed.whenComplete { _ in task.cancel() }
        await withTaskCancellationHandler {
            await task.value
        } onCancel: {
            task.cancel()
        }
    }

    private func ready(writer: ResponseWriter) async {
        if let reason = registry.notReadyReason(segment: segment) {
            var headers = HTTPHeaders()
            headers.add(name: "retry-after", value: "2")
            await writer.sendJSON(status: 503, #"{"status":"not_ready","reason":\#(JSON.quoted(reason))}"#, headers: headers)
        } else {
            let names = registry.listedNames(segment: segment).map { JSON.quoted($0) }.joined(separator: ",")
            await writer.sendJSON(status: 200, #"{"status":"ready","models":[\#(names)]}"#)
        }
    }

    private func models(writer: ResponseWriter) async {
        let data = registry.listedNames(segment: segment).map { name in
            #"{"id":\#(JSON.quoted(name)),"object":"model","created":0,"owned_by":"llm-gateway"}"#
        }
        await writer.sendJSON(status: 200, #"{"object":"list","data":[\#(data.joined(separator: ","))]}"#)
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
