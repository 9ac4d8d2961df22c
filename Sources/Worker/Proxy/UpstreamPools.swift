import NIOCore
import NIOSSL
import Shared

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
