import Shared

/// The supervisor's decisions about its worker processes, as a pure state machine: it
/// takes events (start, a spawned or exited child, a signal, a periodic observation of the
/// shared segment) with the current time and returns the actions to perform. It does no
/// I/O, so every path — respawn backoff, boot failure, stall, reload, scale, drain — is
/// unit-tested with a fake clock.
public struct WorkerPoolStateMachine: Sendable {
    /// Timings and limits.
    public struct Configuration: Sendable, Equatable {
        public var desiredWorkers: Int
        /// A ready worker whose heartbeat is older than this is killed and replaced.
        public var heartbeatTimeout: Double = 10
        /// A worker that does not report ready within this is killed.
        public var bootTimeout: Double = 30
        /// Graceful drain limit; stragglers are killed ``WorkerPoolStateMachine/killGrace``
        /// after it (a worker ends its own open streams at the limit, with an error event).
        public var drainTimeout: Double = 30
        /// How long a fast stop (QUIT) waits before killing.
        public var fastStopTimeout: Double = 2
        /// Boot failures in a row that stop the supervisor instead of respawning forever.
        public var maxConsecutiveBootFailures = 5
        /// First respawn delay; doubles per consecutive failure up to ``backoffMax``.
        public var backoffBase: Double = 0.1
        public var backoffMax: Double = 5
        /// Crashes of ready workers closer together than this count as consecutive.
        public var crashWindow: Double = 10
        /// Send `WATCHDOG=1` this often while workers heartbeat (nil = no watchdog).
        public var watchdogInterval: Double?

        public init(desiredWorkers: Int) { self.desiredWorkers = desiredWorkers }
    }

    /// Signals the supervisor acts on.
    public enum Signal: Sendable, Equatable {
        case terminate, interrupt, quit, hangup, increase, decrease
    }

    /// Signals the supervisor sends to workers.
    public enum WorkerSignal: Sendable, Equatable {
        /// SIGTERM: graceful drain.
        case terminate
        /// SIGQUIT: stop now.
        case quit
        /// SIGKILL.
        case kill
    }

    /// How a child ended.
    public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        public var description: String {
            switch self {
            case .exited(let code): "exit status \(code)"
            case .signaled(let sig): "signal \(sig)"
            }
        }
    }

    /// What a tick observed in a worker's shared-memory slot.
    public struct Observation: Sendable, Equatable {
        public var pid: Int32
        public var reportedReady: Bool
        public var heartbeat: MonotonicInstant

        public init(pid: Int32, reportedReady: Bool, heartbeat: MonotonicInstant) {
            self.pid = pid
            self.reportedReady = reportedReady
            self.heartbeat = heartbeat
        }
    }

    /// Inputs.
    public enum Event: Sendable, Equatable {
        case start
        case spawned(slot: Int, pid: Int32)
        case spawnFailed(slot: Int, reason: String)
        case exited(pid: Int32, status: ExitStatus)
        case tick([Observation])
        case signal(Signal)
        /// The executor re-read the configuration after ``Action/reloadConfiguration``.
        case reloaded(desiredWorkers: Int)
        case reloadFailed(reason: String)
    }

    /// Log levels of ``Action/log(_:_:)``.
    public enum LogLevel: Sendable, Equatable { case info, warning, error, critical }

    /// Outputs, performed in order by the executor.
    public enum Action: Sendable, Equatable {
        /// Start a worker of `generation` in `slot`; `replacing` counts a restart.
        case spawn(slot: Int, generation: UInt64, replacing: Bool)
        case signal(pid: Int32, WorkerSignal)
        /// An sd_notify message.
        case notify(String)
        /// Close the listening socket and flag the segment as draining.
        case stopListening
        /// Re-read the configuration, then feed ``Event/reloaded(desiredWorkers:)`` or ``Event/reloadFailed(reason:)``.
        case reloadConfiguration
        case log(LogLevel, String)
        case exit(code: Int32)
    }

    enum Phase: Equatable {
        case booting(since: MonotonicInstant)
        case ready
        /// Asked to stop: retired or drained (`replace` false), or killed for a stall or a
        /// boot timeout with its replacement already scheduled (`replace` true).
        case stopping(replace: Bool)
    }

    struct Worker: Equatable {
        var slot: Int
        var pid: Int32
        var generation: UInt64
        var phase: Phase
        var everReady: Bool
        /// A retired worker still running then is killed (it had the drain timeout).
        var retireDeadline: MonotonicInstant?
    }

    struct PendingSpawn: Equatable {
        var notBefore: MonotonicInstant
        var replacing: Bool
    }

    enum Lifecycle: Equatable {
        case idle
        case starting
        case running
        case reloading(awaitingConfiguration: Bool)
        case draining(deadline: MonotonicInstant, killed: Bool, exitCode: Int32)
        case exited
    }

    public private(set) var configuration: Configuration
    private(set) var lifecycle: Lifecycle = .idle
    private(set) var workers: [Worker] = []
    private(set) var pending: [PendingSpawn] = []
    private(set) var generation: UInt64 = 1
    private var consecutiveBootFailures = 0
    private var recentCrashes: [MonotonicInstant] = []
    private var lastWatchdog: MonotonicInstant?
    private var lastReportedReady = -1
    private var awaitingReady = false
    private var random: SplitMix64

    public init(configuration: Configuration, seed: UInt64) {
        self.configuration = configuration
        self.random = SplitMix64(seed: seed)
    }

    /// Live worker pids (for tests and status).
    public var workerPIDs: [Int32] { workers.map(\.pid).filter { $0 > 0 } }

    /// True once the machine asked the executor to exit.
    public var hasExited: Bool { lifecycle == .exited }

    /// Feeds one event; returns the actions to perform, in order.
    public mutating func handle(_ event: Event, now: MonotonicInstant) -> [Action] {
        var actions: [Action] = []
        switch event {
        case .start:
            guard lifecycle == .idle else { return [] }
            lifecycle = .starting
            actions.append(.notify("STATUS=starting \(configuration.desiredWorkers) workers"))
            reconcile(now: now, into: &actions)
        case .spawned(let slot, let pid):
            // Replace the placeholder that kept the slot taken since the spawn action.
            if let index = workers.firstIndex(where: { $0.slot == slot && $0.pid < 0 }) {
                workers[index].pid = pid
            }
        case .spawnFailed(let slot, let reason):
            workers.removeAll { $0.slot == slot && $0.pid < 0 }
            actions.append(.log(.error, "could not start a worker: \(reason)"))
            bootFailed(now: now, into: &actions)
        case .exited(let pid, let status):
            workerExited(pid: pid, status: status, now: now, into: &actions)
        case .tick(let observations):
            tick(observations, now: now, into: &actions)
        case .signal(let signal):
            handle(signal, now: now, into: &actions)
        case .reloaded(let desired):
            guard lifecycle == .reloading(awaitingConfiguration: true) else { return [] }
            generation += 1
            configuration.desiredWorkers = desired
            lifecycle = .reloading(awaitingConfiguration: false)
            actions.append(.log(.info, "configuration reloaded; replacing workers one at a time (generation \(generation))"))
            advanceReload(now: now, into: &actions)
        case .reloadFailed(let reason):
            guard lifecycle == .reloading(awaitingConfiguration: true) else { return [] }
            actions.append(.log(.error, "reload refused, keeping the running configuration: \(reason)"))
            lifecycle = .running
            actions.append(.notify("READY=1\nSTATUS=reload failed; \(readyCount) workers ready"))
        }
        return actions
    }

    // MARK: - Events

    private mutating func handle(_ signal: Signal, now: MonotonicInstant, into actions: inout [Action]) {
        if case .draining = lifecycle { return }
        if lifecycle == .exited || lifecycle == .idle { return }
        switch signal {
        case .terminate, .interrupt:
            beginDrain(deadline: now.adding(seconds: configuration.drainTimeout + Self.killGrace), signal: .terminate, exitCode: 0, into: &actions)
            actions.insert(.log(.info, "graceful drain: \(workers.count) workers finishing in-flight requests (up to \(configuration.drainTimeout) s)"), at: 0)
        case .quit:
            actions.append(.log(.info, "fast stop"))
            beginDrain(deadline: now.adding(seconds: configuration.fastStopTimeout), signal: .quit, exitCode: 0, into: &actions)
        case .hangup:
            guard lifecycle == .running || lifecycle == .starting else {
                actions.append(.log(.warning, "SIGHUP ignored: a reload is already in progress"))
                return
            }
            lifecycle = .reloading(awaitingConfiguration: true)
            actions.append(.notify("RELOADING=1"))
            actions.append(.reloadConfiguration)
        case .increase:
            guard configuration.desiredWorkers < SegmentLayout.maxWorkers / 2 else {
                actions.append(.log(.warning, "SIGTTIN ignored: already at the maximum of \(SegmentLayout.maxWorkers / 2) workers"))
                return
            }
            configuration.desiredWorkers += 1
            actions.append(.log(.info, "SIGTTIN: workers \(configuration.desiredWorkers - 1) → \(configuration.desiredWorkers)"))
            if case .reloading = lifecycle { return }
            reconcile(now: now, into: &actions)
        case .decrease:
            guard configuration.desiredWorkers > 1 else {
                actions.append(.log(.warning, "SIGTTOU ignored: keeping the last worker"))
                return
            }
            configuration.desiredWorkers -= 1
            actions.append(.log(.info, "SIGTTOU: workers \(configuration.desiredWorkers + 1) → \(configuration.desiredWorkers)"))
            if case .reloading = lifecycle { return }
            reconcile(now: now, into: &actions)
        }
    }

    /// How long after the drain timeout a worker still running is killed: the worker cuts
    /// its own open responses at the timeout (streams end with an error event and
    /// `[DONE]`), and needs a moment to write them.
    public static let killGrace = 1.0

    private mutating func beginDrain(deadline: MonotonicInstant, signal: WorkerSignal, exitCode: Int32, into actions: inout [Action]) {
        lifecycle = .draining(deadline: deadline, killed: false, exitCode: exitCode)
        pending.removeAll()
        actions.append(.notify("STOPPING=1\nSTATUS=draining \(workers.count) workers"))
        actions.append(.stopListening)
        for index in workers.indices where workers[index].pid > 0 {
            workers[index].phase = .stopping(replace: false)
            actions.append(.signal(pid: workers[index].pid, signal))
        }
        exitIfDrained(into: &actions)
    }

    private mutating func workerExited(pid: Int32, status: ExitStatus, now: MonotonicInstant, into actions: inout [Action]) {
        guard let index = workers.firstIndex(where: { $0.pid == pid }) else { return }
        let worker = workers.remove(at: index)
        switch lifecycle {
        case .draining:
            exitIfDrained(into: &actions)
            return
        case .exited, .idle:
            return
        case .starting, .running, .reloading:
            break
        }
        switch worker.phase {
        case .stopping:
            break  // retired on purpose, or already replaced when it was killed
        case .booting, .ready:
            if !worker.everReady {
                actions.append(.log(.error, "worker \(pid) exited before it was ready (\(status))"))
                bootFailed(now: now, into: &actions)
            } else {
                actions.append(.log(.warning, "worker \(pid) died (\(status)); replacing it"))
                scheduleCrashReplacement(now: now)
            }
        }
        if lifecycle == .exited { return }
        if case .reloading(awaitingConfiguration: false) = lifecycle {
            advanceReload(now: now, into: &actions)
        } else {
            reconcile(now: now, into: &actions)
        }
    }

    private mutating func scheduleCrashReplacement(now: MonotonicInstant) {
        recentCrashes = recentCrashes.filter { now.seconds(since: $0) < configuration.crashWindow } + [now]
        pending.append(PendingSpawn(notBefore: now.adding(seconds: backoff(failures: recentCrashes.count)), replacing: true))
    }

    private mutating func bootFailed(now: MonotonicInstant, into actions: inout [Action]) {
        consecutiveBootFailures += 1
        if consecutiveBootFailures >= configuration.maxConsecutiveBootFailures {
            actions.append(.log(.critical, "workers failed to start \(consecutiveBootFailures) times in a row; stopping (see the worker errors above)"))
            beginDrain(deadline: now.adding(seconds: configuration.fastStopTimeout), signal: .terminate, exitCode: 1, into: &actions)
            return
        }
        pending.append(PendingSpawn(notBefore: now.adding(seconds: backoff(failures: consecutiveBootFailures)), replacing: true))
    }

    private mutating func tick(_ observations: [Observation], now: MonotonicInstant, into actions: inout [Action]) {
        var byPID: [Int32: Observation] = [:]
        for o in observations { byPID[o.pid] = o }
        for index in workers.indices {
            let worker = workers[index]
            let observed = byPID[worker.pid]
            switch worker.phase {
            case .booting(let since):
                if observed?.reportedReady == true {
                    workers[index].phase = .ready
                    workers[index].everReady = true
                    consecutiveBootFailures = 0
                    if case .reloading(awaitingConfiguration: false) = lifecycle, worker.generation == generation {
                        retireOneOldWorker(now: now, into: &actions)
                    }
                } else if now.seconds(since: since) > configuration.bootTimeout {
                    workers[index].phase = .stopping(replace: true)
                    actions.append(.log(.error, "worker \(worker.pid) did not become ready within \(configuration.bootTimeout) s; killing it"))
                    actions.append(.signal(pid: worker.pid, .kill))
                    bootFailed(now: now, into: &actions)
                    if lifecycle == .exited { return }
                    if case .draining = lifecycle { return }
                }
            case .ready:
                if let observed, now.seconds(since: observed.heartbeat) > configuration.heartbeatTimeout {
                    workers[index].phase = .stopping(replace: true)
                    actions.append(.log(.error, "worker \(worker.pid) event loop stalled for \(Int(now.seconds(since: observed.heartbeat))) s; killing it"))
                    actions.append(.signal(pid: worker.pid, .kill))
                    scheduleCrashReplacement(now: now)
                }
            case .stopping:
                if let deadline = worker.retireDeadline, now >= deadline {
                    workers[index].retireDeadline = nil
                    actions.append(.log(.warning, "retired worker \(worker.pid) still running after \(configuration.drainTimeout) s; killing it"))
                    actions.append(.signal(pid: worker.pid, .kill))
                }
            }
        }
        switch lifecycle {
        case .draining(let deadline, let killed, let code):
            if !killed && now >= deadline && !workers.isEmpty {
                actions.append(.log(.warning, "drain timeout: killing \(workers.count) worker(s) still running"))
                for worker in workers where worker.pid > 0 { actions.append(.signal(pid: worker.pid, .kill)) }
                lifecycle = .draining(deadline: deadline, killed: true, exitCode: code)
            }
            return
        case .reloading(awaitingConfiguration: false):
            advanceReload(now: now, into: &actions)
        case .starting, .running:
            reconcile(now: now, into: &actions)
        case .idle, .exited, .reloading(awaitingConfiguration: true):
            break
        }
        startDueSpawns(now: now, into: &actions)
        reportReadiness(into: &actions)
        if let interval = configuration.watchdogInterval, lifecycle != .starting {
            let healthy = workers.contains { $0.phase == .ready }
            if healthy, lastWatchdog.map({ now.seconds(since: $0) >= interval }) ?? true {
                lastWatchdog = now
                actions.append(.notify("WATCHDOG=1"))
            }
        }
    }

    // MARK: - Pool shape

    private var readyCount: Int { workers.filter { $0.phase == .ready && $0.generation == generation }.count }

    private var activeCurrent: [Worker] {
        workers.filter { $0.generation == generation && !$0.isStopping }
    }

    /// Brings live + pending workers of the current generation to the desired count.
    private mutating func reconcile(now: MonotonicInstant, into actions: inout [Action]) {
        let have = activeCurrent.count + pending.count
        if have < configuration.desiredWorkers {
            for _ in have..<configuration.desiredWorkers {
                pending.append(PendingSpawn(notBefore: now, replacing: false))
            }
        } else if have > configuration.desiredWorkers {
            var excess = have - configuration.desiredWorkers
            while excess > 0, !pending.isEmpty {
                pending.removeLast()
                excess -= 1
            }
            // Retire the newest workers first: the oldest are warm.
            let candidates = workers.indices.filter { workers[$0].generation == generation && !workers[$0].isStopping }
                .sorted { workers[$0].slot > workers[$1].slot }
            for index in candidates.prefix(excess) {
                workers[index].phase = .stopping(replace: false)
                workers[index].retireDeadline = now.adding(seconds: configuration.drainTimeout + Self.killGrace)
                actions.append(.signal(pid: workers[index].pid, .terminate))
            }
        }
        startDueSpawns(now: now, into: &actions)
    }

    /// One step of a reload: keep exactly one new-generation worker booting while
    /// old-generation workers remain; retire an old one each time a new one is ready.
    private mutating func advanceReload(now: MonotonicInstant, into actions: inout [Action]) {
        let oldActive = workers.filter { $0.generation != generation && !$0.isStopping }
        if oldActive.isEmpty {
            lifecycle = .running
            awaitingReady = true
            reconcile(now: now, into: &actions)
            return
        }
        let booting = workers.contains { $0.generation == generation && !$0.isStopping && !$0.everReady }
        if !booting && pending.isEmpty {
            pending.append(PendingSpawn(notBefore: now, replacing: false))
        }
        startDueSpawns(now: now, into: &actions)
    }

    private mutating func retireOneOldWorker(now: MonotonicInstant, into actions: inout [Action]) {
        guard
            let index = workers.indices.filter({ workers[$0].generation != generation && !workers[$0].isStopping })
                .min(by: { workers[$0].slot < workers[$1].slot })
        else { return }
        workers[index].phase = .stopping(replace: false)
        workers[index].retireDeadline = now.adding(seconds: configuration.drainTimeout + Self.killGrace)
        actions.append(.signal(pid: workers[index].pid, .terminate))
    }

    private mutating func startDueSpawns(now: MonotonicInstant, into actions: inout [Action]) {
        var remaining: [PendingSpawn] = []
        var usedSlots = Set(workers.map(\.slot))
        for spawn in pending {
            guard spawn.notBefore <= now else {
                remaining.append(spawn)
                continue
            }
            guard let slot = (0..<SegmentLayout.maxWorkers).first(where: { !usedSlots.contains($0) }) else {
                remaining.append(spawn)
                continue
            }
            usedSlots.insert(slot)
            actions.append(.spawn(slot: slot, generation: generation, replacing: spawn.replacing))
            // A placeholder (negative pid, never signalled) keeps the slot taken until the
            // executor answers with .spawned or .spawnFailed.
            workers.append(Worker(slot: slot, pid: -1 - Int32(slot), generation: generation, phase: .booting(since: now), everReady: false))
        }
        pending = remaining
    }

    /// `READY=1` once every desired worker of the current generation accepts (at start and
    /// after a reload); `STATUS=` whenever the ready count changes.
    private mutating func reportReadiness(into actions: inout [Action]) {
        let ready = readyCount
        if lifecycle == .starting && ready >= configuration.desiredWorkers {
            lifecycle = .running
            awaitingReady = true
        }
        guard lifecycle == .running else { return }
        if awaitingReady && ready >= configuration.desiredWorkers {
            awaitingReady = false
            lastReportedReady = ready
            actions.append(.log(.info, "\(ready) workers ready (generation \(generation))"))
            actions.append(.notify("READY=1\nSTATUS=\(ready) workers ready"))
        } else if !awaitingReady && ready != lastReportedReady {
            lastReportedReady = ready
            actions.append(.notify("STATUS=\(ready) workers ready"))
        }
    }

    private mutating func exitIfDrained(into actions: inout [Action]) {
        guard case .draining(_, let killed, let code) = lifecycle, workers.isEmpty else { return }
        lifecycle = .exited
        actions.append(.log(killed ? .warning : .info, killed ? "drain finished after killing stragglers" : "all workers finished; exiting"))
        actions.append(.exit(code: code))
    }

    private mutating func backoff(failures: Int) -> Double {
        let exponent = Double(max(0, failures - 1))
        let base = min(configuration.backoffMax, configuration.backoffBase * pow2(exponent))
        let jitter = 0.8 + 0.4 * Double(random.next() % 1_000_001) / 1_000_000
        return base * jitter
    }

    private func pow2(_ x: Double) -> Double {
        var result = 1.0
        for _ in 0..<Int(min(x, 30)) { result *= 2 }
        return result
    }
}

extension WorkerPoolStateMachine.Worker {
    var isStopping: Bool {
        if case .stopping = phase { return true }
        return false
    }
}
