import ArgumentParser
import CGatewayShims
import Foundation
import Logging
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// `llm-gateway`: the supervisor. Binds the socket, drops privileges, creates the shared
/// segment and keeps N `llm-gateway-worker` processes serving.
@main
struct LLMGateway: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llm-gateway",
        abstract: "OpenAI-compatible gateway in front of vLLM: auth, limits, routing, streaming, metrics.",
        discussion: discussion
    )

    /// The settings and signals part of `--help`; a test checks it against the settings
    /// table (``GatewayConfiguration`` loading), so no setting goes unmentioned. Each
    /// paragraph is one line (`\` joins the source lines): ArgumentParser wraps it to the
    /// terminal's width, and line breaks of its own came out as ragged lines.
    static let discussion = """
        Every flag also reads an environment variable (shown in brackets); precedence is \
        flag > environment > .env in the working directory > config file > default. The config \
        file takes bind, workers, drain_timeout and user too (the default upstream and the \
        config file itself only come from the flag or the environment).

        Other settings have no flag: set them in the environment (or .env), or in the config \
        file in lower case (BEARER_TOKEN only in the environment or .env): BEARER_TOKEN, \
        RATE_LIMIT_RPM, RATE_LIMIT_TPM, MAX_REQUEST_BODY_BYTES, MAX_TOOLS_PER_REQUEST, \
        MAX_SSE_EVENT_BYTES, CIRCUIT_BREAKER_ENABLED, CIRCUIT_BREAKER_THRESHOLD, \
        CIRCUIT_BREAKER_COOLDOWN, WORKER_HEARTBEAT_TIMEOUT, LOG_LEVEL, REQUEST_HEADER_TIMEOUT, \
        REQUEST_BODY_TIMEOUT, KEEPALIVE_TIMEOUT, MAX_CONNECTIONS_PER_WORKER, \
        UPSTREAM_HEALTH_INTERVAL, UPSTREAM_METRICS_INTERVAL, ROUTING_SESSION_HEADER, \
        ROUTING_RUNNING_REQUEST_TOKENS, ROUTING_WAITING_REQUEST_TOKENS, ROUTING_COLD_SLACK, \
        UPSTREAM_CONNECT_TIMEOUT, UPSTREAM_TIMEOUT, UPSTREAM_KEEPALIVE_TIMEOUT, REDIS_URL, \
        REDIS_FAILURE_MODE, GATEWAY_HOSTS, REDIS_TIMEOUT.

        Signals: TERM/INT graceful drain, QUIT fast stop, HUP reload configuration and \
        replace workers one at a time, TTIN/TTOU one worker more/fewer.
        """

    @Option(name: .long, help: ArgumentHelp("Listening address HOST:PORT, ignored under systemd socket activation [BIND].", valueName: "host:port"))
    var bind: String?

    @Option(name: .long, help: ArgumentHelp("Worker processes (default: number of CPUs) [WORKERS].", valueName: "n"))
    var workers: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Default upstream root URL without /v1, or 'demo' for the built-in demo model [VLLM_UPSTREAM_URL]. Default http://127.0.0.1:18000.",
            valueName: "url"))
    var upstream: String?

    @Option(name: .long, help: ArgumentHelp("YAML file with upstreams, models and keys [LLM_GATEWAY_CONFIG].", valueName: "file"))
    var config: String?

    @Option(
        name: .long, help: ArgumentHelp("Seconds a graceful drain may take before stragglers are killed [DRAIN_TIMEOUT]. Default 30.", valueName: "seconds"))
    var drainTimeout: String?

    @Option(name: .long, help: ArgumentHelp("When started as root: the user to switch to after binding [RUN_AS_USER].", valueName: "name"))
    var user: String?

    func flags() -> [String: String] {
        var flags: [String: String] = [:]
        flags["bind"] = bind
        flags["workers"] = workers
        flags["upstream"] = upstream
        flags["config"] = config
        flags["drain-timeout"] = drainTimeout
        flags["user"] = user
        return flags
    }

    func loadConfiguration() throws -> GatewayConfiguration {
        var dotEnv: [String: String] = [:]
        if let text = try? readWholeFile(".env") { dotEnv = ConfigurationSources.parseDotEnv(text) }
        let sources = ConfigurationSources(
            flags: flags(), environment: ProcessInfo.processInfo.environment, dotEnv: dotEnv,
            cpuCount: ProcessInfo.processInfo.activeProcessorCount
        )
        return try GatewayConfiguration.load(from: sources)
    }

    mutating func run() throws {
        let configuration: GatewayConfiguration
        do {
            configuration = try loadConfiguration()
        } catch let error as ConfigurationError {
            Self.fail("\(error)", code: 2)
        }
        GatewayLogHandler.bootstrap(process: "supervisor", level: Logger.Level(configValue: configuration.logLevel))
        let logger = Logger(label: "llm-gateway.supervisor")

        Self.raiseOpenFileLimit()
        do {
            let workerPath = try WorkerLauncher.locateWorker()
            let listener: ListeningSocket
            if let adopted = try ListeningSocket.adoptFromSystemd() {
                // The same rule as for --bind: no auth only where no one else can connect.
                if let address = BindAddress(parsing: adopted.localAddress),
                    let refusal = configuration.authRefusal(listeningOn: address, describedAs: "systemd passed a socket on \(adopted.localAddress)")
                {
                    Self.fail("\(refusal)", code: 2)
                }
                listener = adopted
            } else {
                listener = try ListeningSocket.bind(configuration.server.bind)
            }
            let listenerFD = Self.moveAbove(listener.fileDescriptor)
            let outcome = try PrivilegeDrop.perform(user: configuration.server.user)
            if configuration.server.user != nil && !outcome.switchedUser {
                logger.warning("--user ignored: not started as root")
            }
            let segment = try SharedSegment.create()
            // Idle since start-up until the first API request (`/idle`, the guardrail).
            var started = timespec()
            clock_gettime(CLOCK_REALTIME, &started)
            segment.noteRequest(atMillis: UInt64(started.tv_sec) * 1000 + UInt64(started.tv_nsec) / 1_000_000)
            let segmentFD = Self.moveAbove(gw_dup_above(segment.fileDescriptor, 10))
            let configFD = try WorkerLauncher.configurationFile(configuration)
            let movedConfigFD = Self.moveAbove(configFD)

            logger.info(
                "listening",
                metadata: [
                    "address": "\(listener.localAddress)", "systemd_socket": "\(listener.fromSystemd)",
                    "workers": "\(configuration.server.workers)", "uid": "\(outcome.uid)",
                    "upstream": "\(configuration.upstreams.map(\.url).joined(separator: ","))",
                    // The URL's description never shows a password.
                    "limits": "\(Self.limitsStore(configuration.sharedLimits))",
                ])
            let poller = UpstreamHealthPoller(configuration: configuration, segment: segment, logger: logger)
            poller.start()
            let engineMetrics = EngineMetricsPoller(configuration: configuration, segment: segment, logger: logger)
            engineMetrics.start()
            let movedListener = ListeningSocket(
                fileDescriptor: listenerFD, localAddress: listener.localAddress, fromSystemd: listener.fromSystemd)
            let loop = SupervisorLoop(
                configuration: configuration,
                launcher: WorkerLauncher(executablePath: workerPath, listenerFD: listenerFD, segmentFD: segmentFD),
                segment: segment, listener: movedListener, configurationFD: movedConfigFD,
                notifier: SystemdNotifier(), logger: logger,
                reload: { [command = self, running = RunningConfiguration(configuration)] in
                    let fresh = try command.reloadConfiguration(running: running.value, logger: logger)
                        .keepingPositions(of: running.value)
                    running.value = fresh
                    poller.update(fresh)
                    engineMetrics.update(fresh)
                    return fresh
                }
            )
            let code = loop.run()
            throw ExitCode(code)
        } catch let error as ExitCode {
            throw error
        } catch {
            Self.fail("\(error)", code: 1)
        }
    }

    /// Re-reads flags, environment, `.env` and the config file for SIGHUP. Settings that
    /// need the socket or root (bind, user) cannot change without a restart.
    func reloadConfiguration(running: GatewayConfiguration, logger: Logger) throws -> GatewayConfiguration {
        let fresh = try loadConfiguration()
        if let change = try fresh.checkingAuthentication(against: running) {
            logger.warning("\(change)")
        }
        if fresh.server.bind != running.server.bind {
            logger.warning("reload: bind address changes need a restart; keeping \(running.server.bind)")
        }
        if fresh.server.user != running.server.user {
            logger.warning("reload: --user changes need a restart")
        }
        return fresh
    }

    /// The configuration in force, replaced by each successful reload (supervisor thread only).
    final class RunningConfiguration {
        var value: GatewayConfiguration
        init(_ value: GatewayConfiguration) { self.value = value }
    }

    /// Open streams are file descriptors: take the hard limit (workers inherit it).
    static func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// A close-on-exec copy numbered ≥ 10, so handing fds 3, 4, 5 to a child can never
    /// overwrite a source before it is copied.
    /// Where per-key limits are kept, for the start-up line: the Redis URL (its description
    /// never shows a password) and the failure mode, or this host's segment.
    static func limitsStore(_ limits: GatewayConfiguration.SharedLimits) -> String {
        guard let url = limits.redisURL else { return "this host" }
        return "\(url) (REDIS_FAILURE_MODE=\(limits.failureMode.rawValue), GATEWAY_HOSTS=\(limits.gatewayHosts))"
    }

    static func moveAbove(_ fd: Int32) -> Int32 {
        let moved = gw_dup_above(fd, 10)
        guard moved >= 0 else { fail("dup failed: \(errnoText())", code: 1) }
        close(fd)
        return moved
    }

    static func fail(_ message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data("llm-gateway: \(message)\n".utf8))
        Foundation.exit(code)
    }

    /// Blocks the supervisor's signals before any thread exists, so every thread inherits
    /// the mask and `sigtimedwait` in ``SupervisorLoop`` is the only receiver.
    static func main() {
        var set = sigset_t()
        sigemptyset(&set)
        for sig in SupervisorLoop.handledSignals { sigaddset(&set, sig) }
        _ = gw_block_signals(&set)
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
