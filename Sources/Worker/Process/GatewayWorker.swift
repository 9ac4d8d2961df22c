import CGatewayShims
import Foundation
import HTTP1
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// `llm-gateway-worker`: one worker process, started only by the supervisor with the
/// listening socket on fd 3, the shared segment on fd 4 and the configuration on fd 5.
@main
enum GatewayWorker {
    struct Arguments {
        var slot = 0
        var generation: UInt64 = 1
        var supervisorPID: Int32 = 0

        init(_ argv: [String]) throws {
            var iterator = argv.dropFirst().makeIterator()
            while let flag = iterator.next() {
                guard let value = iterator.next() else { throw WorkerStartupError("\(flag) needs a value") }
                switch flag {
                case "--slot":
                    guard let n = Int(value), (0..<SegmentLayout.maxWorkers).contains(n) else { throw WorkerStartupError("bad --slot") }
                    slot = n
                case "--generation":
                    guard let n = UInt64(value) else { throw WorkerStartupError("bad --generation") }
                    generation = n
                case "--supervisor-pid":
                    guard let n = Int32(value) else { throw WorkerStartupError("bad --supervisor-pid") }
                    supervisorPID = n
                default:
                    throw WorkerStartupError("unknown argument \(flag)")
                }
            }
        }
    }

    static func main() async {
        // One event-loop thread per worker process (workers = CPUs), and Swift concurrency
        // runs on it too: no thread hop between the proxy's async code and its I/O.
        NIOSingletons.groupLoopCountSuggestion = 1
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        // A terminal's Ctrl-C reaches the whole process group: the supervisor drives the drain.
        signal(SIGINT, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        signal(SIGHUP, SIG_IGN)
        do {
            let arguments = try Arguments(CommandLine.arguments)
            // Exit with the supervisor, whatever killed it.
            _ = gw_set_parent_death_signal(SIGTERM)
            if arguments.supervisorPID != 0 && getppid() != arguments.supervisorPID {
                throw WorkerStartupError("the supervisor is gone")
            }
            let configuration = try readConfiguration()
            let segment = try SharedSegment.attach(fileDescriptor: WorkerHandoff.segmentFD)
            GatewayLogHandler.bootstrap(process: "worker", level: Logger.Level(configValue: configuration.logLevel))
            var logger = Logger(label: "llm-gateway.worker")
            logger[metadataKey: "slot"] = "\(arguments.slot)"
            try await run(arguments: arguments, configuration: configuration, segment: segment, logger: logger)
        } catch is CancellationError {
            exit(0)  // SIGQUIT: a fast stop, as asked
        } catch {
            FileHandle.standardError.write(Data("llm-gateway-worker: \(error)\n".utf8))
            exit(1)
        }
        exit(0)
    }

    static func run(arguments: Arguments, configuration: GatewayConfiguration, segment: SharedSegment, logger: Logger) async throws {
        let slot = segment.workerSlot(arguments.slot)
        slot.pid = getpid()
        let group = MultiThreadedEventLoopGroup.singleton

        let eventLoop = group.next()
        let upstreams = try UpstreamPools(configuration: configuration, eventLoop: eventLoop, environment: ProcessInfo.processInfo.environment)
        SessionField.name = Array(configuration.server.routingSessionHeader.utf8)  // before any connection
        let sharedLimits = try SharedLimits.make(
            configuration: configuration, eventLoop: eventLoop, local: RequestLimiter(segment: segment),
            metrics: GatewayMetrics(segment: segment, slot: slot.index, models: configuration.metricModels), logger: logger)
        // With REDIS_URL: connect before taking requests (at most the connect timeout).
        try await sharedLimits?.start().get()
        let handler = RequestHandler(
            configuration: configuration, segment: segment, slot: slot, upstreams: upstreams, logger: logger, sharedLimits: sharedLimits)
        let server = HTTPServer(
            listenerFD: WorkerHandoff.listenerFD, group: group, slot: slot, handler: handler,
            maxBodyBytes: configuration.server.maxRequestBodyBytes,
            timeouts: .init(
                head: .milliseconds(Int64(configuration.server.headerTimeout * 1000)),
                body: .milliseconds(Int64(configuration.server.bodyTimeout * 1000)),
                idle: .milliseconds(Int64(configuration.server.keepAliveTimeout * 1000))),
            maxConnections: configuration.server.maxConnectionsPerWorker,
            drainTimeout: .milliseconds(Int64(configuration.server.drainTimeout * 1000)), logger: logger)
        let heartbeat = Heartbeat(group: group, slot: slot)
        let services = ServiceGroup(
            configuration: .init(
                services: [.init(service: heartbeat), .init(service: server, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm],
                cancellationSignals: [.sigquit],
                logger: logger
            ))
        try await services.run()
        try? await eventLoop.submit {
            upstreams.shutdown()
            handler.flushAccessLog()
        }.get()
        try? await sharedLimits?.shutdown().get()
    }

    static func readConfiguration() throws -> GatewayConfiguration {
        var st = stat()
        guard fstat(WorkerHandoff.configurationFD, &st) == 0 else { throw WorkerStartupError("no configuration on fd 5 (start llm-gateway, not the worker)") }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        let n = bytes.withUnsafeMutableBytes { pread(WorkerHandoff.configurationFD, $0.baseAddress, $0.count, 0) }
        guard n == bytes.count else { throw WorkerStartupError("short read of the configuration") }
        close(WorkerHandoff.configurationFD)
        return try JSONDecoder().decode(GatewayConfiguration.self, from: Data(bytes))
    }
}

/// Why a worker could not start (printed as one line; the supervisor counts the failure).
struct WorkerStartupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
