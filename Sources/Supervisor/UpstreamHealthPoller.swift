import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Shared

/// Polls every upstream's health path and `/v1/models` on a fixed interval and publishes
/// the result in the shared segment, where workers answer `/ready` and discover models
/// without touching the upstream themselves.
final class UpstreamHealthPoller: Sendable {
    /// The upstreams of the running configuration (replaced by a reload).
    private let upstreams: NIOLockedValueBox<[GatewayConfiguration.Upstream]>
    let segment: SharedSegment
    let interval: Double
    let logger: Logger
    let environment: [String: String]
    let breakerEnabled: Bool

    init(configuration: GatewayConfiguration, segment: SharedSegment, logger: Logger) {
        self.upstreams = NIOLockedValueBox(configuration.upstreams)
        self.segment = segment
        self.interval = configuration.server.healthInterval
        self.logger = logger
        self.environment = ProcessInfo.processInfo.environment
        self.breakerEnabled = configuration.circuitBreaker.enabled
    }

    /// Polls the upstreams of a reloaded configuration from the next round on.
    func update(_ configuration: GatewayConfiguration) {
        upstreams.withLockedValue { $0 = configuration.upstreams }
    }

    /// Starts polling on a background task; it ends with the process.
    func start() {
        Task.detached { await self.run() }
    }

    func run() async {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(2), read: .seconds(5))
        configuration.decompression = .disabled
        let client = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
        while !Task.isCancelled {
            let current = upstreams.withLockedValue { $0 }
            await withTaskGroup(of: Void.self) { group in
                for (index, upstream) in current.enumerated() where !upstream.retired {
                    group.addTask { await self.check(index: index, upstream: upstream, client: client) }
                }
            }
            try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
        try? await client.shutdown()
    }

    private func check(index: Int, upstream: GatewayConfiguration.Upstream, client: HTTPClient) async {
        let status = segment.upstream(index)
        if upstream.isDemo {
            status.publishModels([ModelRegistry.demoModelName])
            status.health = .up
            return
        }
        var headers = HTTPHeaders()
        if let env = upstream.apiKeyEnv, let key = environment[env], !key.isEmpty {
            headers.add(name: "authorization", value: "Bearer \(key)")
        }
        let isCloud = upstream.apiKeyEnv != nil
        var healthy = false
        do {
            var request = HTTPClientRequest(url: upstream.url + upstream.healthPath)
            request.headers = headers
            let response = try await client.execute(request, timeout: .seconds(2))
            _ = try? await response.body.collect(upTo: 1 << 16)
            // A cloud API may have no health route at all: anything but a 5xx means it answers.
            healthy = response.status.code == 200 || (isCloud && response.status.code < 500)
        } catch {
            healthy = false
        }
        if healthy {
            do {
                var request = HTTPClientRequest(url: upstream.url + "/v1/models")
                request.headers = headers
                let response = try await client.execute(request, timeout: .seconds(2))
                let body = try await response.body.collect(upTo: 4 << 20)
                // An answer that is not a model list leaves the last good one in place.
                if response.status.code == 200, let models = Self.modelIDs(Data(body.readableBytesView)) {
                    status.publishModels(models)
                }
            } catch {
                logger.debug("model discovery failed", metadata: ["upstream": "\(upstream.name)", "error": "\(error)"])
            }
        }
        let previous = status.health
        if !healthy && breakerEnabled {
            // A failed health check opens the breaker at once for every worker.
            let now = MonotonicInstant.now().nanoseconds / 1000
            status.updateBreaker { ((), $0.opening(now: now)) }
        } else if healthy && breakerEnabled {
            // A half-open breaker whose probe never reports must not wait for the probe
            // timeout (UPSTREAM_TIMEOUT) when the upstream plainly answers.
            status.updateBreaker { ((), $0.closingAfterHealthyCheck()) }
        }
        status.health = healthy ? .up : .down
        if previous != status.health {
            if healthy {
                logger.info("upstream is up", metadata: ["upstream": "\(upstream.name)", "models": "\(status.models.joined(separator: ","))"])
            } else {
                logger.warning("upstream is down", metadata: ["upstream": "\(upstream.name)"])
            }
        }
    }

    static func modelIDs(_ data: Data) -> [String]? {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let list = object["data"] as? [[String: Any]]
        else { return nil }
        return list.compactMap { $0["id"] as? String }
    }
}
