import CGatewayShims
import Logging
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// The supervisor's one thread of control: waits for signals (`sigtimedwait`, signals
/// blocked since the first line of `main`) and a 50 ms tick, feeds them to the
/// ``WorkerPoolStateMachine`` and performs the actions it returns.
///
/// Synchronous on purpose: SIGCHLD, reaping and spawning need no event loop, and nothing
/// here can be starved by request traffic (the supervisor serves none).
final class SupervisorLoop {
    /// Signals the loop takes synchronously (blocked in every thread).
    static let handledSignals: [Int32] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGCHLD]

    private var machine: WorkerPoolStateMachine
    private let launcher: WorkerLauncher
    private let segment: SharedSegment
    private let notifier: SystemdNotifier
    private let logger: Logger
    private var listener: ListeningSocket?
    private var configurationFD: Int32
    private let reload: () throws -> GatewayConfiguration
    private var slotsByPID: [Int32: Int] = [:]
    private var exitCode: Int32?

    init(
        configuration: GatewayConfiguration, launcher: WorkerLauncher, segment: SharedSegment, listener: ListeningSocket,
        configurationFD: Int32, notifier: SystemdNotifier, logger: Logger,
        reload: @escaping () throws -> GatewayConfiguration
    ) {
        var poolConfiguration = WorkerPoolStateMachine.Configuration(desiredWorkers: configuration.server.workers)
        poolConfiguration.heartbeatTimeout = configuration.server.heartbeatTimeout
        poolConfiguration.drainTimeout = configuration.server.drainTimeout
        poolConfiguration.watchdogInterval = notifier.watchdogInterval
        self.machine = WorkerPoolStateMachine(configuration: poolConfiguration, seed: UInt64.random(in: .min ... .max))
        self.launcher = launcher
        self.segment = segment
        self.listener = listener
        self.configurationFD = configurationFD
        self.notifier = notifier
        self.logger = logger
        self.reload = reload
    }

    /// Runs until the pool has drained; returns the process exit code.
    func run() -> Int32 {
        var set = sigset_t()
        sigemptyset(&set)
        for sig in Self.handledSignals { sigaddset(&set, sig) }

        feed(.start)
        var lastTick = MonotonicInstant.now()
        while exitCode == nil {
            var timeout = timespec(tv_sec: 0, tv_nsec: 50_000_000)
            var info = siginfo_t()
            let sig = sigtimedwait(&set, &info, &timeout)
            switch sig {
            case SIGCHLD: reapChildren()
            case SIGTERM: feed(.signal(.terminate))
            case SIGINT: feed(.signal(.interrupt))
            case SIGQUIT: feed(.signal(.quit))
            case SIGHUP: feed(.signal(.hangup))
            case SIGTTIN: feed(.signal(.increase))
            case SIGTTOU: feed(.signal(.decrease))
            default: break  // timeout or EINTR
            }
            let now = MonotonicInstant.now()
            if now.seconds(since: lastTick) >= 0.05 && exitCode == nil {
                lastTick = now
                reapChildren()
                if exitCode == nil { feed(.tick(observations())) }
            }
        }
        return exitCode ?? 0
    }

    private func observations() -> [WorkerPoolStateMachine.Observation] {
        slotsByPID.map { pid, slot in
            let view = segment.workerSlot(slot)
            let state = view.state
            return .init(pid: pid, reportedReady: view.pid == pid && (state == .ready || state == .draining), heartbeat: view.heartbeat)
        }
    }

    private func reapChildren() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            guard pid > 0 else { return }
            let exit: WorkerPoolStateMachine.ExitStatus =
                (status & 0x7f) == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
            if let slot = slotsByPID.removeValue(forKey: pid) {
                segment.workerSlot(slot).release()
                segment.workersRunning = UInt64(slotsByPID.count)
                // Workers that stepped out of accepting for it look again.
                segment.bumpAcceptEpoch()
            }
            feed(.exited(pid: pid, status: exit))
            if exitCode != nil { return }
        }
    }

    private func feed(_ event: WorkerPoolStateMachine.Event) {
        let actions = machine.handle(event, now: .now())
        for action in actions { perform(action) }
    }

    private func perform(_ action: WorkerPoolStateMachine.Action) {
        switch action {
        case .spawn(let slot, let generation, let replacing):
            let view = segment.workerSlot(slot)
            view.reset(generation: generation, now: .now())
            do {
                let pid = try launcher.spawn(
                    slot: slot, generation: generation, configurationFD: configurationFD, supervisorPID: getpid())
                view.pid = pid
                slotsByPID[pid] = slot
                segment.workersRunning = UInt64(slotsByPID.count)
                if replacing { segment.recordWorkerRestart() }
                logger.debug("spawned worker", metadata: ["worker_pid": "\(pid)", "slot": "\(slot)", "generation": "\(generation)"])
                feed(.spawned(slot: slot, pid: pid))
            } catch {
                view.release()
                feed(.spawnFailed(slot: slot, reason: "\(error)"))
            }
        case .signal(let pid, let signal):
            guard pid > 0 else { return }
            switch signal {
            case .terminate: kill(pid, SIGTERM)
            case .quit: kill(pid, SIGQUIT)
            case .kill: kill(pid, SIGKILL)
            }
        case .notify(let message):
            notifier.notify(message)
        case .stopListening:
            segment.isDraining = true
            if let listener {
                close(listener.fileDescriptor)
                self.listener = nil
            }
        case .reloadConfiguration:
            do {
                let configuration = try reload()
                let fd = try WorkerLauncher.configurationFile(configuration)
                let moved = gw_dup_above(fd, 10)
                close(fd)
                guard moved >= 0 else { throw WorkerLauncher.Failure(description: "dup: \(errnoText())") }
                close(configurationFD)
                configurationFD = moved
                feed(.reloaded(desiredWorkers: configuration.server.workers))
            } catch {
                feed(.reloadFailed(reason: "\(error)"))
            }
        case .log(let level, let message):
            switch level {
            case .info: logger.info("\(message)")
            case .warning: logger.warning("\(message)")
            case .error: logger.error("\(message)")
            case .critical: logger.critical("\(message)")
            }
        case .exit(let code):
            exitCode = code
        }
    }
}
