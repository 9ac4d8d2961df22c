import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import Shared

/// The worker's keep-alive connection pools to its upstreams: one `HTTPClient` per
/// upstream (its own connect and read timeouts; no redirects, no decompression; a pool
/// large enough for thousands of open streams), on the worker's event loop.
final class UpstreamClient: Sendable {
    private let clients: [HTTPClient]
    private let timeouts: [TimeAmount]
    /// `Authorization` values for cloud upstreams, by upstream index (read from the
    /// environment variable the config names; never logged).
    let authorization: [Int: String]

    init(configuration: GatewayConfiguration, group: any EventLoopGroup, environment: [String: String]) {
        var clients: [HTTPClient] = []
        var timeouts: [TimeAmount] = []
        var keys: [Int: String] = [:]
        for (index, upstream) in configuration.upstreams.enumerated() {
            let connect = upstream.connectTimeout ?? configuration.server.upstreamConnectTimeout
            let timeout = upstream.timeout ?? configuration.server.upstreamTimeout
            var client = HTTPClient.Configuration()
            client.redirectConfiguration = .disallow
            client.decompression = .disabled
            client.timeout = .init(connect: .milliseconds(Int64(connect * 1000)), read: .milliseconds(Int64(timeout * 1000)))
            client.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 10_000)
            client.httpVersion = .http1Only
            clients.append(HTTPClient(eventLoopGroupProvider: .shared(group), configuration: client))
            timeouts.append(.milliseconds(Int64(timeout * 1000)))
            if let env = upstream.apiKeyEnv, let key = environment[env], !key.isEmpty { keys[index] = "Bearer \(key)" }
        }
        self.clients = clients
        self.timeouts = timeouts
        self.authorization = keys
    }

    /// Sends `request` to upstream `index`, waiting at most its timeout for the head.
    func execute(_ request: HTTPClientRequest, upstream index: Int) async throws -> HTTPClientResponse {
        try await clients[index].execute(request, timeout: timeouts[index])
    }

    /// Closes every pool.
    func shutdown() async {
        for client in clients { try? await client.shutdown() }
    }

    /// How an upstream call failed before a response arrived.
    enum Failure: Error {
        /// Could not connect (refused, unreachable, connect timeout): the upstream is down.
        case unreachable(String)
        /// No response headers within the timeout.
        case timeout
        /// Anything else (connection reset mid-request, protocol error).
        case failed(String)
    }

    /// Sorts an AsyncHTTPClient/NIO error into a ``Failure``.
    static func classify(_ error: any Error) -> Failure {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout: return .timeout
            case .connectTimeout: return .unreachable("connect timeout")
            default: break
            }
        }
        let text = String(describing: error)
        if text.contains("connectTimeout") { return .unreachable("connect timeout") }
        if error is NIOConnectionError || text.contains("ECONNREFUSED") || text.contains("Connection refused")
            || text.contains("connectionRefused") || text.contains("NIOConnectionError")
        {
            return .unreachable("connection refused")
        }
        return .failed(text)
    }
}
