import Foundation
import Testing

@testable import Shared

@Suite struct AcceptBalanceTests {
    @Test func aWorkerWaitsWhileAtMostOneConnectionAheadOfTheFewest() {
        #expect(AcceptBalance.mayWait(mine: 0, fewestElsewhere: nil))  // alone
        #expect(AcceptBalance.mayWait(mine: 1000, fewestElsewhere: nil))
        #expect(AcceptBalance.mayWait(mine: 0, fewestElsewhere: 0))  // ties wait
        #expect(AcceptBalance.mayWait(mine: 3, fewestElsewhere: 2))
        #expect(!AcceptBalance.mayWait(mine: 4, fewestElsewhere: 2))
        #expect(AcceptBalance.mayWait(mine: 2, fewestElsewhere: 9))
        // Of any set of counts, the fewest always waits: someone takes the next connection.
        var rng = SplitMix64(seed: 7)
        for _ in 0..<1000 {
            let counts = (0..<Int(rng.next() % 6 + 1)).map { _ in rng.next() % 20 }
            let waiting = counts.indices.filter { i in
                let others = counts.indices.filter { $0 != i }.map { counts[$0] }
                return AcceptBalance.mayWait(mine: counts[i], fewestElsewhere: others.min())
            }
            #expect(waiting.contains { counts[$0] == counts.min() })
            #expect(waiting.allSatisfy { counts[$0] <= counts.min()! + AcceptBalance.slack })
        }
    }

    @Test func onlyReadyWorkersWithAFreshHeartbeatAreComparedAndNeverThemselves() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let now = MonotonicInstant(nanoseconds: 100_000_000_000)
        func worker(_ index: Int, _ state: WorkerSlot.State, connections: Int, heartbeatAge: Double = 0) {
            let slot = segment.workerSlot(index)
            slot.reset(generation: 1, now: now.adding(seconds: -heartbeatAge))
            slot.state = state
            for _ in 0..<connections { slot.connectionOpened() }
        }
        worker(0, .ready, connections: 5)
        worker(1, .ready, connections: 2, heartbeatAge: 0.5)
        worker(2, .draining, connections: 0)
        worker(3, .ready, connections: 0, heartbeatAge: 1.5)  // its loop hangs
        worker(4, .booting, connections: 0)
        #expect(segment.fewestConnections(excluding: 0, now: now) == 2)
        #expect(segment.fewestConnections(excluding: 1, now: now) == 5)
        #expect(AcceptBalance(segment: segment, slot: 0).mayWait(now: now) == false)
        #expect(AcceptBalance(segment: segment, slot: 1).mayWait(now: now))
        segment.workerSlot(1).connectionClosed()
        segment.workerSlot(1).connectionClosed()
        #expect(segment.fewestConnections(excluding: 0, now: now) == 0)
        segment.workerSlot(1).release()  // died: no longer compared, its count dropped
        #expect(segment.workerSlot(1).connections == 0)
        #expect(segment.fewestConnections(excluding: 0, now: now) == nil)
        #expect(AcceptBalance(segment: segment, slot: 0).mayWait(now: now))
        segment.workerSlot(0).reset(generation: 2, now: now)  // a new worker starts at zero
        #expect(segment.workerSlot(0).connections == 0)
    }

    @Test func aWorkerThatSteppedOutWakesOnTheNextBumpNotAtItsTimeout() async throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let fd = dup(segment.fileDescriptor)
        let other = try SharedSegment.attach(fileDescriptor: fd)  // another worker's mapping
        let balance = AcceptBalance(segment: segment, slot: 0)

        // An epoch that moved on: no sleep at all.
        let stale = balance.epoch
        other.bumpAcceptEpoch()
        let start = MonotonicInstant.now()
        balance.stepOut(seen: stale, timeout: 60)
        #expect(MonotonicInstant.now().seconds(since: start) < 30)
        #expect(balance.sleepers == 0)

        // A sleeper is woken by a bump from the other mapping, long before its 60 s.
        let seen = balance.epoch
        let woke = Task.detached { () -> Double in
            let start = MonotonicInstant.now()
            balance.stepOut(seen: seen, timeout: 60)
            return MonotonicInstant.now().seconds(since: start)
        }
        for _ in 0..<5000 where balance.sleepers == 0 { try await Task.sleep(for: .milliseconds(2)) }
        #expect(balance.sleepers == 1)
        other.bumpAcceptEpoch()
        #expect(await woke.value < 30)
        #expect(balance.sleepers == 0)
    }
}
