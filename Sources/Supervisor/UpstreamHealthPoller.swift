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
    /// The running configuration (replaced by a reload): its upstreams, the poll interval,
    /// the timeouts and whether the breaker is on.
    private let configuration: NIOLockedValueBox<GatewayConfiguration>
    let segment: SharedSegment
    let logger: Logger
    let environment: [String: String]

    init(configuration: GatewayConfiguration, segment: SharedSegment, logger: Logger) {
        self.configuration = NIOLockedValueBox(configuration)
        self.segment = segment
        self.logger = logger
        self.environment = ProcessInfo.processInfo.environment
    }

    /// Polls with a reloaded configuration from the next round on.
    func update(_ configuration: GatewayConfiguration) {
        self.configuration.withLockedValue { $0 = configuration }
    }

    /// Starts polling on a background task; it ends with the process.
    func start() {
        Task.detached { await self.run() }
    }

    func run() async {
        // One client per distinct pair of timeouts (AsyncHTTPClient sets them per client),
        // kept across rounds so health checks reuse their connections.
        var clients: [Timeouts: HTTPClient] = [:]
        while !Task.isCancelled {
            let current = configuration.withLockedValue { $0 }
            var checks: [(index: Int, upstream: GatewayConfiguration.Upstream, timeouts: Timeouts, client: HTTPClient)] = []
            for (index, upstream) in current.upstreams.enumerated() where !upstream.retired {
                if upstream.isDemo {
                    let status = segment.upstream(index)
                    status.publishModels([.init(ModelRegistry.demoModelName)])
                    status.health = .up
                    continue
                }
                let timeouts = Timeouts(upstream: upstream, configuration: current)
                let client = clients[timeouts] ?? Self.makeClient(timeouts)
                clients[timeouts] = client
                checks.append((index, upstream, timeouts, client))
            }
            let inUse = Set(checks.map { $0.timeouts })
            for (timeouts, client) in clients where !inUse.contains(timeouts) {
                clients[timeouts] = nil
                try? await client.shutdown()
            }
            let breakerEnabled = current.circuitBreaker.enabled
            await withTaskGroup(of: Void.self) { group in
                for check in checks {
                    group.addTask {
                        await self.check(
                            index: check.index, upstream: check.upstream, client: check.client, deadline: check.timeouts.deadline,
                            breakerEnabled: breakerEnabled)
                    }
                }
            }
            try? await Task.sleep(for: .milliseconds(Int(current.server.healthInterval * 1000)))
        }
        for client in clients.values { try? await client.shutdown() }
    }

    static func makeClient(_ timeouts: Timeouts) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: timeouts.connectAmount, read: timeouts.readAmount)
        configuration.decompression = .disabled
        return HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
    }

    private func check(
        index: Int, upstream: GatewayConfiguration.Upstream, client: HTTPClient, deadline: TimeAmount, breakerEnabled: Bool
    ) async {
        let status = segment.upstream(index)
        var headers = HTTPHeaders()
        if let env = upstream.apiKeyEnv, let key = environment[env], !key.isEmpty {
            headers.add(name: "authorization", value: "Bearer \(key)")
        }
        let isCloud = upstream.apiKeyEnv != nil
        var healthy = false
        do {
            var request = HTTPClientRequest(url: upstream.url + upstream.healthPath)
            request.headers = headers
            let response = try await client.execute(request, timeout: deadline)
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
                let response = try await client.execute(request, timeout: deadline)
                let body = try await response.body.collect(upTo: 4 << 20)
                // An answer that is not a model list leaves the last good one in place.
                if response.status.code == 200, let models = Self.servedModels(Data(body.readableBytesView)) {
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

    /// The models of a `/v1/models` answer; a LoRA adapter is one whose `parent` is a name.
    static func servedModels(_ data: Data) -> [UpstreamStatus.ServedModel]? {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let list = object["data"] as? [[String: Any]]
        else { return nil }
        return list.compactMap { entry in
            (entry["id"] as? String).map { UpstreamStatus.ServedModel($0, parent: entry["parent"] as? String) }
        }
    }
}
