import AsyncHTTPClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Shared

/// Scrapes every upstream's `/metrics` (vLLM's Prometheus text) each
/// `UPSTREAM_METRICS_INTERVAL` and publishes its engine load in the shared segment, with
/// the time it was read: queue, running batch, KV-cache use, and how many prompt blocks its
/// prefix cache holds (for the ``PrefixIndex``'s LRU clock). An upstream whose scrape fails
/// keeps its last figures with their old time, which the workers see as stale; a page that
/// is too large or not Prometheus text gives no figures, never a crash.
final class EngineMetricsPoller: Sendable {
    private let configuration: NIOLockedValueBox<GatewayConfiguration>
    let segment: SharedSegment
    let logger: Logger
    private let client: HTTPClient
    /// Each upstream's latest server start time seen (`process_start_time_seconds`).
    private let processStarts = NIOLockedValueBox<[Int: Double]>([:])

    init(configuration: GatewayConfiguration, segment: SharedSegment, logger: Logger) {
        self.configuration = NIOLockedValueBox(configuration)
        self.segment = segment
        self.logger = logger
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.redirectConfiguration = .disallow
        clientConfiguration.decompression = .disabled
        clientConfiguration.connectionPool = .init(idleTimeout: .seconds(30))
        self.client = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: clientConfiguration)
    }

    /// Scrapes with a reloaded configuration from the next round on.
    func update(_ configuration: GatewayConfiguration) {
        self.configuration.withLockedValue { $0 = configuration }
    }

    /// Starts scraping on a background task; it ends with the process.
    func start() {
        Task.detached { await self.run() }
    }

    /// How long one scrape may take: the upstream's connect timeout to connect, and the
    /// whole answer within four intervals (at least a second, at most its `timeout`).
    static func deadline(upstream: GatewayConfiguration.Upstream, configuration: GatewayConfiguration) -> Double {
        let connect = upstream.connectTimeout ?? configuration.server.upstreamConnectTimeout
        let read = min(upstream.timeout ?? configuration.server.upstreamTimeout, max(1, configuration.server.metricsInterval * 4))
        return connect + read
    }

    /// Prompt blocks (``PromptBlocks/tokensPerBlock`` tokens each) a cache of `gpuBlocks`
    /// blocks of `blockSize` tokens holds.
    static func promptBlocks(gpuBlocks: Int, blockSize: Int) -> UInt64 {
        let tokens = UInt64(gpuBlocks).multipliedReportingOverflow(by: UInt64(blockSize))
        guard !tokens.overflow else { return PrefixIndex.unknownCapacity }
        return max(1, tokens.partialValue / UInt64(PromptBlocks.tokensPerBlock))
    }

    func run() async {
        while !Task.isCancelled {
            let current = configuration.withLockedValue { $0 }
            await withTaskGroup(of: Void.self) { group in
                for (index, upstream) in current.upstreams.enumerated() where !upstream.retired && !upstream.isDemo {
                    guard let path = upstream.metricsPath else { continue }
                    let deadline = Self.deadline(upstream: upstream, configuration: current)
                    group.addTask { await self.scrape(index: index, url: upstream.url + path, name: upstream.name, deadline: deadline) }
                }
            }
            try? await Task.sleep(for: .milliseconds(Int(current.server.metricsInterval * 1000)))
        }
        try? await client.shutdown()
    }

    private func scrape(index: Int, url: String, name: String, deadline: Double) async {
        let load: EngineLoad
        do {
            let response = try await client.execute(HTTPClientRequest(url: url), timeout: .milliseconds(Int64(deadline * 1000)))
            guard response.status.code == 200 else {
                _ = try? await response.body.collect(upTo: 1 << 16)
                return
            }
            let body = try await response.body.collect(upTo: EngineLoad.maxBytes)
            load = EngineLoad(prometheusText: body.readableBytesView)
        } catch {
            logger.debug("engine metrics scrape failed", metadata: ["upstream": "\(name)", "error": "\(error)"])
            return
        }
        let previousStart = processStarts.withLockedValue { starts in
            defer { if let start = load.processStart { starts[index] = max(start, starts[index] ?? start) } }
            return starts[index]
        }
        if Self.publish(load, to: segment.upstream(index), previousStart: previousStart) {
            logger.info("upstream engine restarted: its prefix cache is taken as empty", metadata: ["upstream": "\(name)"])
        }
    }

    /// Publishes one scrape of an upstream in the segment; true when its server restarted
    /// since the latest start time seen, `previousStart`. A restarted server has
    /// an empty prefix cache and maybe another batch size: what the index says it holds ages
    /// out at once, and its batch capacity is learned again.
    @discardableResult
    static func publish(_ load: EngineLoad, to status: UpstreamStatus, previousStart: Double?) -> Bool {
        let restarted = restarted(previous: previousStart, now: load.processStart)
        if restarted {
            let capacity = status.cacheBlocks
            status.prefixBlockCounter.wrappingIncrement(
                by: capacity == 0 ? PrefixIndex.unknownCapacity : min(capacity, PrefixIndex.unknownCapacity), ordering: .relaxed)
            status.engineBatchCapacity = nil
        }
        if let blocks = load.gpuBlocks, let size = load.blockSize {
            status.cacheBlocks = Self.promptBlocks(gpuBlocks: blocks, blockSize: size)
        }
        status.engineBatchCapacity = batchCapacity(previous: status.engineBatchCapacity, waiting: load.waiting, running: load.running)
        status.publishEngineLoad(
            EngineLoadSnapshot(
                waiting: load.waiting.map { UInt64(min($0, 1e12)) }, running: load.running.map { UInt64(min($0, 1e12)) },
                kvCacheUsage: load.kvCacheUsage, lora: load.lora.map(\.slots), readAtMicros: max(1, MonotonicInstant.now().nanoseconds / 1000)))
        return restarted
    }

    /// Whether the server behind an upstream restarted: its page says it started at `now`
    /// (`process_start_time_seconds`; nil: not on the page), after the latest start seen
    /// before, `previous`. Only a later start counts: an upstream URL that is a load balancer
    /// over several servers shows their start times in turn, and is not restarted each time.
    static func restarted(previous: Double?, now: Double?) -> Bool {
        guard let previous, let now else { return false }
        return now > previous + 0.001
    }

    /// The engine's batch capacity (how many requests it runs at once: vLLM's `max_num_seqs`,
    /// or fewer when its KV cache is the limit; `/metrics` does not state it) after a scrape
    /// found `waiting` and `running`: the most requests ever seen running, once requests have
    /// been seen waiting (nil until then: an engine never seen queueing has no known limit).
    /// Running is never above the capacity, so the estimate never is either. A scrape that
    /// lands between two engine steps sees requests waiting beside a batch that is not full
    /// (they are admitted at the next step): that alone once set the capacity at 5 or 6 of 8,
    /// and made the workers count free places as queued; the most seen running corrects it.
    static func batchCapacity(previous: UInt64?, waiting: Double?, running: Double?) -> UInt64? {
        guard let running, running >= 1, previous != nil || (waiting ?? 0) >= 1 else { return previous }
        return max(previous ?? 0, UInt64(min(running, 1e9)))
    }
}
