import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Shared

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
