import Atomics
import Logging
import NIOCore
import NIOHTTP1
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

extension RequestHead {
    /// What the key check reads: `authorization`, else `x-api-key` (Anthropic's clients) as
    /// a bearer token.
    var credential: String? { authorization ?? apiKey.map { "Bearer " + $0 } }
}

/// Turns a request, its route already matched, into a response: the method and key
/// checks, then the route's handler. Built once per worker; holds no per-request state.
final class RequestHandler: Sendable {
    let configuration: GatewayConfiguration
    let segment: SharedSegment
    let slot: WorkerSlot
    let registry: ModelRegistry
    let proxy: ProxyHandler
    let authenticator: Authenticator
    let metrics: GatewayMetrics
    let exposition: ExpositionCache
    /// The worker's connections (drained on SIGTERM, counted in its slot).
    let connections: ConnectionRegistry
    private let accessLog: AccessLog?

    /// - Parameter accessLogFD: where access lines go (standard error).
    /// - Parameter sharedLimits: with `REDIS_URL`, the worker's limits in Redis.
    init(
        configuration: GatewayConfiguration, segment: SharedSegment, slot: WorkerSlot, upstreams: UpstreamPools, logger: Logger,
        accessLogFD: Int32 = 2, sharedLimits: SharedLimits? = nil
    ) {
        self.configuration = configuration
        self.segment = segment
        self.slot = slot
        self.connections = ConnectionRegistry(slot: slot)
        let registry = ModelRegistry(configuration: configuration)
        let modelNames = configuration.metricModels
        let metrics = GatewayMetrics(segment: segment, slot: slot.index, models: modelNames)
        self.registry = registry
        self.metrics = metrics
        self.authenticator = Authenticator(configuration: configuration)
        self.exposition = ExpositionCache(
            exposition: PrometheusExposition(models: modelNames, upstreams: configuration.upstreams.map { ($0.name, $0.retired) }))
        self.proxy = ProxyHandler(
            registry: registry, upstreams: upstreams, segment: segment, slot: slot, demo: DemoModel(),
            limiter: RequestLimiter(segment: segment), sharedLimits: sharedLimits, metrics: metrics, breaker: configuration.circuitBreaker,
            upstreamTimeout: configuration.server.upstreamTimeout, maxTools: configuration.server.maxToolsPerRequest,
            maxEventBytes: configuration.server.maxSSEEventBytes,
            routingTuning: CacheAwareTuning(configuration.server), logger: logger)
        // LOG_LEVEL above info turns the access log off.
        let level = Logger(label: "llm-gateway.access").logLevel
        self.accessLog = level <= .info ? AccessLog(eventLoop: upstreams.eventLoop, fd: accessLogFD) : nil
    }

    /// Answers one request. `credential` is what the connection's last authenticated request
    /// presented (a keep-alive client's next request with the same skips the digest).
    func handle(_ request: GatewayRequest, writer: ResponseWriter, remembering credential: inout RememberedCredential?) {
        let method = request.head.method.rawValue
        // An unknown path is a 404 whatever the method: the switch below answers it.
        guard request.route == .other || method == request.route.method || (method == "HEAD" && request.route.method == "GET") else {
            writer.send(error: .methodNotAllowed(method, allowed: [request.route.method]))
            return
        }
        var identity: ClientIdentity?
        if request.route.requiresAuth {
            identity = authenticator.authenticate(
                authorization: request.head.credential, remembering: &credential)
            guard identity != nil else {
                writer.send(error: .unauthorized())
                return
            }
            writer.request.logFields.key = identity?.name
            // An API request: activity for /idle until its response ends.
            writer.request.countedAsOpen = true
            slot.apiRequestStarted()
            segment.noteRequest(atMillis: Self.wallClockMillis())
        }
        switch request.route {
        case .health:
            writer.sendJSON(status: 200, #"{"status":"ok"}"#)
        case .ready:
            ready(writer: writer)
        case .idle:
            idle(writer: writer)
        case .metrics:
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "text/plain; version=0.0.4; charset=utf-8")
            writer.send(status: 200, headers: headers, body: ByteBuffer(string: exposition.text(segment: segment)))
        case .models:
            models(for: identity, writer: writer)
        case .other:
            writer.send(error: .routeNotFound(method: method, path: Self.printablePath(request.head.uri)))
        default:
            // Every other route is an API route of a family (``Route/family``), proxied.
            if let identity { proxied(request, identity: identity, writer: writer) }
        }
    }

    /// What ``handle(_:writer:)`` would refuse knowing only the head (unknown route, wrong
    /// method, missing or wrong key), so the connection can answer before reading a body.
    func refusalBeforeBody(_ head: RequestHead, remembering memo: inout RememberedCredential?) -> GatewayError? {
        let route = head.route
        let method = head.method.rawValue
        if route == .other { return .routeNotFound(method: method, path: Self.printablePath(head.uri)) }
        guard method == route.method || (method == "HEAD" && route.method == "GET") else {
            return .methodNotAllowed(method, allowed: [route.method])
        }
        if route.requiresAuth, authenticator.authenticate(authorization: head.credential, remembering: &memo) == nil {
            return .unauthorized()
        }
        return nil
    }

    /// The boundary of an upload route's body, from its one `content-type`; else the 400
    /// (in OpenAI's shape) it gets before its body is read.
    static func uploadBoundary(_ head: RequestHead) -> Result<MultipartBoundary, GatewayError> {
        guard head.contentTypeCount <= 1 else {
            return .failure(.badRequest("The request must have one content-type.", code: "invalid_content_type"))
        }
        do throws(MultipartFormError) {
            return .success(try MultipartBoundary(contentType: head.contentType ?? ""))
        } catch {
            return .failure(error.gatewayError)
        }
    }

    /// An upload whose head passed ``refusalBeforeBody(_:remembering:)``: counted as an API
    /// request from now on, and given its body as it arrives.
    func beginUpload(
        _ head: RequestHead, boundary: MultipartBoundary, writer: ResponseWriter, reads: any UploadReads, remembering credential: inout RememberedCredential?
    ) -> FormUpload? {
        guard let identity = authenticator.authenticate(authorization: head.credential, remembering: &credential) else {
            writer.send(error: .unauthorized())
            return nil
        }
        writer.request.logFields.key = identity.name
        writer.request.countedAsOpen = true
        slot.apiRequestStarted()
        segment.noteRequest(atMillis: Self.wallClockMillis())
        let request = GatewayRequest(head: head, route: head.route, body: ByteBuffer(), requestID: writer.requestID)
        return FormUpload(proxy: proxy, request: request, boundary: boundary, identity: identity, writer: writer, reads: reads)
    }

    private func proxied(_ request: GatewayRequest, identity: ClientIdentity, writer: ResponseWriter) {
        proxy.handle(request, identity: identity, writer: writer)
    }

    private func ready(writer: ResponseWriter) {
        if let reason = registry.notReadyReason(segment: segment) {
            var headers = HTTPHeaders()
            headers.add(name: "retry-after", value: "2")
            writer.sendJSON(status: 503, #"{"status":"not_ready","reason":\#(JSON.quoted(reason))}"#, headers: headers)
        } else {
            let names = registry.listedNames(segment: segment).map { JSON.quoted($0) }.joined(separator: ",")
            writer.sendJSON(status: 200, #"{"status":"ready","models":[\#(names)]}"#)
        }
    }

    /// `{"idle_seconds":…,"open_streams":…}`: seconds since an API request last started or
    /// ended (0 while one is open), and how many are open, over every worker.
    private func idle(writer: ResponseWriter) {
        let open = segment.openRequests
        let now = Self.wallClockMillis()
        let last = segment.lastRequestMillis
        let idleMillis = open > 0 || last >= now ? 0 : Int(clamping: now - last)
        var text: [UInt8] = Array(#"{"idle_seconds":"#.utf8)
        DecimalText.appendThousandths(idleMillis, to: &text)
        text += Array(#","open_streams":"#.utf8)
        DecimalText.append(Int(clamping: open), to: &text)
        text.append(UInt8(ascii: "}"))
        writer.sendJSON(status: 200, String(decoding: text, as: UTF8.self))
    }

    /// Milliseconds since the Unix epoch (CLOCK_REALTIME).
    static func wallClockMillis() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec) / 1_000_000
    }

    private func models(for identity: ClientIdentity?, writer: ResponseWriter) {
        let names = registry.listedNames(segment: segment).filter { identity?.models?.contains($0) ?? true }
        let data = names.map { name in
            #"{"id":\#(JSON.quoted(name)),"object":"model","created":0,"owned_by":"llm-gateway"}"#
        }
        writer.sendJSON(status: 200, #"{"object":"list","data":[\#(data.joined(separator: ","))]}"#)
    }

    /// Counts the request and writes one structured access line (never headers, keys or
    /// bodies). `method` is the head's ``methodLabel(_:)``, or `other` for what the parser
    /// refused (no head).
    func finished(method: String, route: Route, requestID: String, writer: ResponseWriter, start: MonotonicInstant) {
        if writer.request.countedAsOpen {
            writer.request.countedAsOpen = false
            slot.apiRequestEnded()
            segment.noteRequest(atMillis: Self.wallClockMillis())
        }
        let seconds = MonotonicInstant.now().seconds(since: start)
        metrics.request(route: route, method: method, status: writer.status, seconds: seconds)
        accessLog?.record(
            requestID: requestID, method: method, route: route.template, status: writer.status, seconds: seconds, bytes: writer.bodyBytes,
            fields: writer.request.logFields)
    }

    /// Writes access lines still buffered (before the worker exits).
    func flushAccessLog() { accessLog?.flush() }

    static func methodLabel(_ method: HTTPMethod) -> String {
        switch method {
        case .GET, .POST, .HEAD: method.rawValue
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
