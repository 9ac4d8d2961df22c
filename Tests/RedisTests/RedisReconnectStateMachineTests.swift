import NIOCore
import Testing

@testable import Redis

/// A generator that always draws `value`: 0 draws a fraction of 0, `.max` one just under 1.
struct FixedRandom: RandomNumberGenerator, Sendable {
    var value: UInt64
    mutating func next() -> UInt64 { value }
}

/// A small seeded generator (SplitMix64), for jitter that varies yet replays.
struct SeededRandom: RandomNumberGenerator, Sendable {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// When the client connects again, with time passed in: backoff growth, its cap and
/// jitter, a drop after being up, early timers, and shutdown in every state.
@Suite struct RedisReconnectStateMachineTests {
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    static func backoff(jitter: Double = 0) -> RedisConfiguration.Backoff {
        var backoff = RedisConfiguration.Backoff()
        backoff.initial = .milliseconds(50)
        backoff.maximum = .seconds(1)
        backoff.multiplier = 2
        backoff.jitter = jitter
        return backoff
    }

    @Test func failedAttemptsWaitLongerUpToTheCap() {
        var machine = RedisReconnectStateMachine(backoff: Self.backoff(), random: FixedRandom(value: 0))
        #expect(machine.start() == .connect)
        #expect(machine.start() == .none)
        var now = Self.start
        var waits: [Int64] = []
        for attempt in 0..<8 {
            #expect(machine.state == .connecting(attempt: attempt))
            guard case .scheduleTimer(let until) = machine.connectFailed(now: now) else {
                Issue.record("no timer after attempt \(attempt)")
                return
            }
            waits.append((until - now).nanoseconds / 1_000_000)
            #expect(!machine.isConnected)
            now = until
            #expect(machine.timerFired(now: now) == .connect)
        }
        #expect(waits == [50, 100, 200, 400, 800, 1000, 1000, 1000])
    }

    @Test func aTimerThatFiresEarlyWaitsOn() {
        var machine = RedisReconnectStateMachine(backoff: Self.backoff(), random: FixedRandom(value: 0))
        _ = machine.start()
        let until = Self.start + .milliseconds(50)
        #expect(machine.connectFailed(now: Self.start) == .scheduleTimer(until))
        #expect(machine.timerFired(now: until - .nanoseconds(1)) == .scheduleTimer(until))
        #expect(machine.timerFired(now: until) == .connect)
        #expect(machine.timerFired(now: until) == .none)
    }

    @Test func aConnectionResetsTheBackoffAndADropWaitsTheFirstStep() {
        var machine = RedisReconnectStateMachine(backoff: Self.backoff(), random: FixedRandom(value: 0))
        _ = machine.start()
        var now = Self.start
        for _ in 0..<4 {
            guard case .scheduleTimer(let until) = machine.connectFailed(now: now) else { return }
            now = until
            _ = machine.timerFired(now: now)
        }
        #expect(machine.connectSucceeded() == .none)
        #expect(machine.isConnected && machine.state == .connected)
        now = now + .seconds(60)
        #expect(machine.connectionClosed(now: now) == .scheduleTimer(now + .milliseconds(50)))
        #expect(machine.state == .waitingToReconnect(until: now + .milliseconds(50), attempt: 1))
        #expect(machine.connectionClosed(now: now) == .none)
        #expect(machine.timerFired(now: now + .milliseconds(50)) == .connect)
        #expect(machine.connectFailed(now: now) == .scheduleTimer(now + .milliseconds(100)))
    }

    @Test func jitterTakesOffUpToItsFraction() {
        var most = RedisReconnectStateMachine(backoff: Self.backoff(jitter: 0.5), random: FixedRandom(value: .max))
        let shortest = most.delay(attempt: 1).nanoseconds
        #expect(shortest >= 50_000_000 && shortest < 50_000_100)
        var seeded = RedisReconnectStateMachine(backoff: Self.backoff(jitter: 0.5), random: SeededRandom(state: 7))
        var seen = Set<Int64>()
        for attempt in 0..<200 {
            let base = min(1_000_000_000, 50_000_000 << Int64(min(attempt % 8, 20)))
            let delay = seeded.delay(attempt: attempt % 8).nanoseconds
            #expect(delay > base / 2 - 1 && delay <= base, "attempt \(attempt % 8): \(delay)")
            seen.insert(delay)
        }
        #expect(seen.count > 100)
    }

    @Test func shutdownInEveryState() {
        var idle = RedisReconnectStateMachine(backoff: Self.backoff(), random: FixedRandom(value: 0))
        #expect(idle.shutdown() == .none)
        #expect(idle.start() == .none)

        var connecting = RedisReconnectStateMachine(backoff: Self.backoff(), random: FixedRandom(value: 0))
        _ = connecting.start()
        #expect(connecting.shutdown() == .none)
        // The attempt under way ends: a connection made meanwhile is closed, a failure is nothing.
        #expect(connecting.connectSucceeded() == .closeConnection)
        #expect(connecting.connectFailed(now: Self.start) == .none)

        var connected = RedisReconnectStateMachine(backoff: Self.backoff(), random: FixedRandom(value: 0))
        _ = connected.start()
        _ = connected.connectSucceeded()
        #expect(connected.shutdown() == .closeConnection)
        #expect(connected.connectionClosed(now: Self.start) == .none)
        #expect(connected.state == .shutDown)

        var waiting = RedisReconnectStateMachine(backoff: Self.backoff(), random: FixedRandom(value: 0))
        _ = waiting.start()
        _ = waiting.connectFailed(now: Self.start)
        #expect(waiting.shutdown() == .cancelTimer)
        #expect(waiting.timerFired(now: Self.start + .seconds(10)) == .none)
        #expect(waiting.shutdown() == .none)
    }
}
