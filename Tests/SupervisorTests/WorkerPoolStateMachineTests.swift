import GatewayTestKit
import Shared
import Testing

@testable import Supervisor

/// Drives a ``WorkerPoolStateMachine`` the way the supervisor does, playing the executor:
/// every spawn action gets a pid at once.
struct PoolHarness {
    var machine: WorkerPoolStateMachine
    var clock = TestClock()
    var nextPID: Int32 = 100
    var ready: Set<Int32> = []
    var heartbeats: [Int32: MonotonicInstant] = [:]
    var log: [WorkerPoolStateMachine.Action] = []

    init(workers: Int, configure: (inout WorkerPoolStateMachine.Configuration) -> Void = { _ in }) {
        var configuration = WorkerPoolStateMachine.Configuration(desiredWorkers: workers)
        configure(&configuration)
        machine = WorkerPoolStateMachine(configuration: configuration, seed: 42)
    }

    @discardableResult
    mutating func send(_ event: WorkerPoolStateMachine.Event) -> [WorkerPoolStateMachine.Action] {
        var all: [WorkerPoolStateMachine.Action] = []
        var queue = [event]
        while !queue.isEmpty {
            let actions = machine.handle(queue.removeFirst(), now: clock.now)
            all += actions
            for action in actions {
                if case .spawn(let slot, _, _) = action {
                    nextPID += 1
                    heartbeats[nextPID] = clock.now
                    queue.append(.spawned(slot: slot, pid: nextPID))
                }
            }
        }
        log += all
        return all
    }

    /// A tick where every live worker heart-beats now and `ready` workers report ready.
    @discardableResult
    mutating func tick(stalled: Set<Int32> = []) -> [WorkerPoolStateMachine.Action] {
        let observations = machine.workerPIDs.map { pid in
            if !stalled.contains(pid) { heartbeats[pid] = clock.now }
            return WorkerPoolStateMachine.Observation(pid: pid, reportedReady: ready.contains(pid), heartbeat: heartbeats[pid] ?? clock.now)
        }
        return send(.tick(observations))
    }

    mutating func makeAllReady() -> [WorkerPoolStateMachine.Action] {
        ready.formUnion(machine.workerPIDs)
        return tick()
    }
}

extension [WorkerPoolStateMachine.Action] {
    var spawns: Int { filter { if case .spawn = $0 { true } else { false } }.count }
    var notifications: [String] { compactMap { if case .notify(let m) = $0 { m } else { nil } } }
    func signals(_ kind: WorkerPoolStateMachine.WorkerSignal) -> [Int32] {
        compactMap { if case .signal(let pid, let s) = $0, s == kind { pid } else { nil } }
    }
    var exitCode: Int32? { compactMap { if case .exit(let code) = $0 { code } else { nil } }.first }
}

@Suite struct WorkerPoolStateMachineTests {
    @Test func startSpawnsTheDesiredWorkersAndReportsReadyOnlyWhenAllAccept() {
        var pool = PoolHarness(workers: 3)
        let start = pool.send(.start)
        #expect(start.spawns == 3)
        #expect(!start.notifications.contains { $0.contains("READY=1") })
        pool.ready.insert(pool.machine.workerPIDs[0])
        #expect(!pool.tick().notifications.contains { $0.contains("READY=1") })
        let all = pool.makeAllReady()
        #expect(all.notifications.contains("READY=1\nSTATUS=3 workers ready"))
        #expect(pool.tick().notifications.isEmpty)  // said once
    }

    @Test func aDeadWorkerIsReplacedAfterABackoffWithJitter() {
        var pool = PoolHarness(workers: 2)
        pool.send(.start)
        _ = pool.makeAllReady()
        let victim = pool.machine.workerPIDs[0]
        let exit = pool.send(.exited(pid: victim, status: .signaled(9)))
        #expect(exit.spawns == 0)  // not before the backoff
        pool.clock.advance(0.2)  // first backoff is 0.1 s ± 20 %
        let respawn = pool.tick()
        #expect(respawn.spawns == 1)
        #expect(respawn.contains(.spawn(slot: 0, generation: 1, replacing: true)))
        #expect(pool.machine.workerPIDs.count == 2)
    }

    @Test func backoffGrowsWithRepeatedCrashes() {
        var pool = PoolHarness(workers: 1)
        pool.send(.start)
        _ = pool.makeAllReady()
        var delays: [Double] = []
        for _ in 0..<4 {
            let pid = pool.machine.workerPIDs[0]
            pool.send(.exited(pid: pid, status: .exited(1)))
            var waited = 0.0
            while pool.tick().spawns == 0 && waited < 60 {
                pool.clock.advance(0.01)
                waited += 0.01
            }
            delays.append(waited)
            _ = pool.makeAllReady()
        }
        #expect(delays[3] > delays[0] * 3, "\(delays)")
    }

    @Test func workersThatNeverBootStopTheSupervisorWithExitCode1() {
        var pool = PoolHarness(workers: 1)
        pool.send(.start)
        var exitCode: Int32?
        for _ in 0..<10 where exitCode == nil {
            guard let pid = pool.machine.workerPIDs.first else {
                pool.clock.advance(10)
                exitCode = pool.tick().exitCode
                continue
            }
            let actions = pool.send(.exited(pid: pid, status: .exited(3)))
            exitCode = actions.exitCode
            pool.clock.advance(10)
            exitCode = exitCode ?? pool.tick().exitCode
        }
        #expect(exitCode == 1)
        #expect(pool.log.contains { if case .log(.critical, let m) = $0 { m.contains("failed to start 5 times") } else { false } })
    }

    @Test func aStalledWorkerIsKilledAndReplaced() {
        var pool = PoolHarness(workers: 2) { $0.heartbeatTimeout = 1 }
        pool.send(.start)
        _ = pool.makeAllReady()
        let stuck = pool.machine.workerPIDs[1]
        pool.clock.advance(0.5)
        #expect(pool.tick(stalled: [stuck]).signals(.kill).isEmpty)
        pool.clock.advance(0.6)
        let kill = pool.tick(stalled: [stuck])
        #expect(kill.signals(.kill) == [stuck])
        let exited = pool.send(.exited(pid: stuck, status: .signaled(9)))
        pool.clock.advance(0.2)
        let after = pool.tick()
        // exactly one replacement, counted as a restart
        let spawns = kill + exited + after
        #expect(spawns.spawns == 1, "\(spawns)")
        #expect(spawns.contains { if case .spawn(_, _, true) = $0 { true } else { false } })
    }

    @Test func gracefulDrainSignalsEveryWorkerAndExitsZeroWhenTheyAreGone() {
        var pool = PoolHarness(workers: 2)
        pool.send(.start)
        _ = pool.makeAllReady()
        let pids = pool.machine.workerPIDs
        let drain = pool.send(.signal(.terminate))
        #expect(drain.contains(.stopListening))
        #expect(drain.notifications.contains { $0.hasPrefix("STOPPING=1") })
        #expect(Set(drain.signals(.terminate)) == Set(pids))
        #expect(pool.send(.exited(pid: pids[0], status: .exited(0))).exitCode == nil)
        pool.clock.advance(5)
        #expect(pool.tick().spawns == 0)  // nothing is replaced while draining
        #expect(pool.send(.exited(pid: pids[1], status: .exited(0))).exitCode == 0)
    }

    @Test func drainTimeoutKillsStragglers() {
        var pool = PoolHarness(workers: 1) { $0.drainTimeout = 3 }
        pool.send(.start)
        _ = pool.makeAllReady()
        let pid = pool.machine.workerPIDs[0]
        pool.send(.signal(.terminate))
        pool.clock.advance(2.9 + WorkerPoolStateMachine.killGrace)
        #expect(pool.tick().signals(.kill).isEmpty)
        pool.clock.advance(0.2)
        #expect(pool.tick().signals(.kill) == [pid])
        #expect(pool.send(.exited(pid: pid, status: .signaled(9))).exitCode == 0)
    }

    @Test func quitIsAFastStop() {
        var pool = PoolHarness(workers: 2)
        pool.send(.start)
        _ = pool.makeAllReady()
        #expect(pool.send(.signal(.quit)).signals(.quit).count == 2)
    }

    @Test func ttinAndTtouChangeTheWorkerCount() {
        var pool = PoolHarness(workers: 2)
        pool.send(.start)
        _ = pool.makeAllReady()
        #expect(pool.send(.signal(.increase)).spawns == 1)
        _ = pool.makeAllReady()
        let newest = pool.machine.workerPIDs.max()!
        #expect(pool.send(.signal(.decrease)).signals(.terminate) == [newest])
        pool.send(.exited(pid: newest, status: .exited(0)))
        pool.clock.advance(1)
        #expect(pool.tick().spawns == 0)  // retired on purpose: not replaced
        #expect(pool.machine.workerPIDs.count == 2)
        pool.send(.signal(.decrease))
        #expect(pool.send(.signal(.decrease)).signals(.terminate).isEmpty)  // the last one stays
    }

    @Test func aRetiredWorkerThatDoesNotLeaveIsKilledAfterTheDrainTimeout() {
        var pool = PoolHarness(workers: 2) { $0.drainTimeout = 5 }
        pool.send(.start)
        _ = pool.makeAllReady()
        let retired = pool.send(.signal(.decrease)).signals(.terminate)
        #expect(retired.count == 1)
        pool.clock.advance(4.9 + WorkerPoolStateMachine.killGrace)
        #expect(pool.tick().signals(.kill).isEmpty)
        pool.clock.advance(0.2)
        #expect(pool.tick().signals(.kill) == retired)
        #expect(pool.tick().signals(.kill).isEmpty)  // once
    }

    @Test func reloadReplacesWorkersOneAtATime() {
        var pool = PoolHarness(workers: 3)
        pool.send(.start)
        _ = pool.makeAllReady()
        let old = Set(pool.machine.workerPIDs)
        let hup = pool.send(.signal(.hangup))
        #expect(hup.contains(.reloadConfiguration))
        #expect(hup.notifications.contains("RELOADING=1"))
        let reloaded = pool.send(.reloaded(desiredWorkers: 3))
        #expect(reloaded.spawns == 1)
        var retired: [Int32] = []
        var readySeen = false
        for _ in 0..<10 {
            // at most one new worker boots at a time, and an old one retires only after it is ready
            let actions = pool.makeAllReady()
            retired += actions.signals(.terminate)
            #expect(actions.spawns <= 1)
            for pid in actions.signals(.terminate) { pool.send(.exited(pid: pid, status: .exited(0))) }
            readySeen = readySeen || actions.notifications.contains { $0.hasPrefix("READY=1") }
            let live = Set(pool.machine.workerPIDs)
            #expect(live.count <= 4)
            if live.isDisjoint(with: old) && readySeen { break }
        }
        #expect(Set(retired) == old)
        #expect(readySeen)
        #expect(pool.machine.workerPIDs.count == 3)
    }

    @Test func failedReloadKeepsTheRunningWorkers() {
        var pool = PoolHarness(workers: 2)
        pool.send(.start)
        _ = pool.makeAllReady()
        pool.send(.signal(.hangup))
        let failed = pool.send(.reloadFailed(reason: "bad yaml"))
        #expect(failed.notifications.contains { $0.hasPrefix("READY=1") })
        #expect(failed.spawns == 0 && failed.signals(.terminate).isEmpty)
    }

    @Test func watchdogIsSentOnlyWhileWorkersAreReady() {
        var pool = PoolHarness(workers: 1) {
            $0.watchdogInterval = 1
            $0.heartbeatTimeout = 100
        }
        pool.send(.start)
        #expect(!pool.tick().notifications.contains("WATCHDOG=1"))
        #expect(pool.makeAllReady().notifications.contains("WATCHDOG=1"))
        pool.clock.advance(0.5)
        #expect(!pool.tick().notifications.contains("WATCHDOG=1"))
        pool.clock.advance(0.6)
        #expect(pool.tick().notifications.contains("WATCHDOG=1"))
        let pid = pool.machine.workerPIDs[0]
        pool.send(.exited(pid: pid, status: .signaled(9)))
        pool.clock.advance(0.05)
        #expect(!pool.tick().notifications.contains("WATCHDOG=1"))
    }

    @Test func spawnFailureCountsAsABootFailure() {
        var pool = PoolHarness(workers: 1)
        let actions = pool.machine.handle(.start, now: pool.clock.now)
        #expect(actions.spawns == 1)
        let failed = pool.machine.handle(.spawnFailed(slot: 0, reason: "ENOENT"), now: pool.clock.now)
        #expect(failed.contains { if case .log(.error, let m) = $0 { m.contains("ENOENT") } else { false } })
        #expect(pool.machine.workerPIDs.isEmpty)
    }
}
