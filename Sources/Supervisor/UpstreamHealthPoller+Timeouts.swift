import NIOCore
import Shared

extension UpstreamHealthPoller {
    /// How long one upstream's health check may take, from that upstream's configuration.
    ///
    /// - ``connect``: the upstream's `connect_timeout`, else `UPSTREAM_CONNECT_TIMEOUT`: the
    ///   same limit a proxied request has to connect to it.
    /// - ``read``: how long its answer may keep the check waiting (for the response head, and
    ///   between reads of the body): the upstream's `timeout`, else `UPSTREAM_TIMEOUT`, but at
    ///   most one poll interval (`UPSTREAM_HEALTH_INTERVAL`), so an upstream that accepts and
    ///   then hangs shows as down within about one interval rather than after the minutes a
    ///   generation may take. A very short interval does not bring it below
    ///   ``minimumRead``, so a merely busy upstream is not marked down; a shorter `timeout`
    ///   still wins.
    /// - ``deadline``: connect plus read, the outer limit for a request's response head.
    struct Timeouts: Hashable, Sendable {
        /// Seconds to open a connection.
        var connect: Double
        /// Seconds the answer may keep the check waiting.
        var read: Double

        /// The floor a short poll interval cannot push ``read`` below, in seconds.
        static let minimumRead: Double = 1

        init(connect: Double, read: Double) {
            self.connect = connect
            self.read = read
        }

        /// The timeouts for checking `upstream` under `configuration`.
        init(upstream: GatewayConfiguration.Upstream, configuration: GatewayConfiguration) {
            let server = configuration.server
            let timeout = upstream.timeout ?? server.upstreamTimeout
            self.init(
                connect: upstream.connectTimeout ?? server.upstreamConnectTimeout,
                read: min(timeout, max(server.healthInterval, Self.minimumRead)))
        }

        /// ``connect`` as a `TimeAmount`.
        var connectAmount: TimeAmount { Self.amount(connect) }
        /// ``read`` as a `TimeAmount`.
        var readAmount: TimeAmount { Self.amount(read) }
        /// Connect plus read: by then a request's response head must have arrived.
        var deadline: TimeAmount { Self.amount(connect + read) }

        private static func amount(_ seconds: Double) -> TimeAmount {
            .nanoseconds(Int64((seconds * 1_000_000_000).rounded()))
        }
    }
}
