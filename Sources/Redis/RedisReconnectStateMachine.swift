import NIOCore

/// When a ``RedisClient`` connects, as a value: connect at start, wait and connect again
/// after a failed attempt (exponential backoff with a cap and jitter, from
/// ``RedisConfiguration/Backoff``) or after the connection drops, stop at shutdown. The
/// client feeds it what happened, with the time (it reads no clock), and does what it
/// answers; the random numbers for the jitter come from the generator it was given.
struct RedisReconnectStateMachine {
    enum State: Equatable {
        /// Not started.
        case idle
        /// An attempt is under way; `attempt` failed ones came before it.
        case connecting(attempt: Int)
        /// Commands can be sent.
        case connected
        /// The next attempt (number `attempt`) is due at `until`.
        case waitingToReconnect(until: NIODeadline, attempt: Int)
        /// Shut down: nothing more happens.
        case shutDown
    }

    enum Action: Equatable {
        case none
        /// Start connecting.
        case connect
        /// Call ``timerFired(now:)`` at this time.
        case scheduleTimer(NIODeadline)
        /// Close the connection (the one just made, or the one that is up).
        case closeConnection
        /// Cancel the scheduled timer.
        case cancelTimer
    }

    private(set) var state = State.idle
    private let backoff: RedisConfiguration.Backoff
    private var random: any RandomNumberGenerator

    init(backoff: RedisConfiguration.Backoff, random: any RandomNumberGenerator) {
        self.backoff = backoff
        self.random = random
    }

    var isConnected: Bool { state == .connected }

    /// The client starts.
    mutating func start() -> Action {
        guard state == .idle else { return .none }
        state = .connecting(attempt: 0)
        return .connect
    }

    /// The attempt under way succeeded.
    mutating func connectSucceeded() -> Action {
        switch state {
        case .connecting:
            state = .connected
            return .none
        case .shutDown:
            return .closeConnection
        case .idle, .connected, .waitingToReconnect:
            preconditionFailure("connect succeeded in state \(state)")
        }
    }

    /// The attempt under way failed.
    mutating func connectFailed(now: NIODeadline) -> Action {
        switch state {
        case .connecting(let attempt):
            return wait(now: now, attempt: attempt)
        case .shutDown:
            return .none
        case .idle, .connected, .waitingToReconnect:
            preconditionFailure("connect failed in state \(state)")
        }
    }

    /// The connection that was up closed (the server went away, or its bytes were bad).
    mutating func connectionClosed(now: NIODeadline) -> Action {
        guard state == .connected else { return .none }
        return wait(now: now, attempt: 0)
    }

    /// The timer asked for by ``Action/scheduleTimer(_:)`` fired.
    mutating func timerFired(now: NIODeadline) -> Action {
        guard case .waitingToReconnect(let until, let attempt) = state else { return .none }
        guard now >= until else { return .scheduleTimer(until) }
        state = .connecting(attempt: attempt)
        return .connect
    }

    /// The client shuts down.
    mutating func shutdown() -> Action {
        let previous = state
        state = .shutDown
        switch previous {
        case .connected: return .closeConnection
        case .waitingToReconnect: return .cancelTimer
        // An attempt under way ends in connectSucceeded (which closes) or connectFailed.
        case .idle, .connecting, .shutDown: return .none
        }
    }

    private mutating func wait(now: NIODeadline, attempt: Int) -> Action {
        let until = now + delay(attempt: attempt)
        state = .waitingToReconnect(until: until, attempt: attempt + 1)
        return .scheduleTimer(until)
    }

    /// `min(maximum, initial × multiplier^attempt)`, less up to `jitter` of it at random.
    mutating func delay(attempt: Int) -> TimeAmount {
        let initial = Double(backoff.initial.nanoseconds)
        let maximum = Double(backoff.maximum.nanoseconds)
        var base = min(initial, maximum)
        for _ in 0..<attempt where base < maximum { base = min(maximum, base * max(backoff.multiplier, 1)) }
        let jitter = min(max(backoff.jitter, 0), 1)
        let fraction = Double.random(in: 0..<1, using: &random)
        return .nanoseconds(Int64(base * (1 - jitter * fraction)))
    }
}
