import NIOConcurrencyHelpers
import NIOCore

/// The worker's open connections and whether each is between requests, so a graceful
/// drain can close the idle ones at once, let busy ones finish their response, and give a
/// connection accepted just before the drain the chance to deliver its first request
/// (closing it unread would reset a client that did nothing wrong).
final class ConnectionRegistry: Sendable {
    private struct Entry {
        var channel: any Channel
        var idle = true
        var served = 0
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var draining = false
    }

    private let state = NIOLockedValueBox(State())
    /// How long a connection that has not sent its first request may still send it once
    /// the drain began.
    let freshConnectionGrace: TimeAmount

    init(freshConnectionGrace: TimeAmount = .seconds(2)) {
        self.freshConnectionGrace = freshConnectionGrace
    }

    var isDraining: Bool { state.withLockedValue { $0.draining } }

    /// Connections open now.
    var count: Int { state.withLockedValue { $0.entries.count } }

    /// Adds a connection (one accepted just as the drain began gets the same grace).
    func register(_ channel: any Channel) {
        let draining = state.withLockedValue { state in
            state.entries[ObjectIdentifier(channel)] = Entry(channel: channel)
            return state.draining
        }
        if draining { closeIfStillFresh(channel) }
    }

    func unregister(_ channel: any Channel) {
        _ = state.withLockedValue { $0.entries.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// A request head arrived on `channel`.
    func requestStarted(on channel: any Channel) {
        state.withLockedValue { $0.entries[ObjectIdentifier(channel)]?.idle = false }
    }

    /// `channel` finished a response; returns true when it should close now (draining).
    func requestFinished(on channel: any Channel) -> Bool {
        state.withLockedValue { state in
            let id = ObjectIdentifier(channel)
            state.entries[id]?.idle = true
            state.entries[id]?.served += 1
            return state.draining
        }
    }

    /// Starts the drain: closes idle connections that have served a request; fresh ones
    /// get ``freshConnectionGrace`` to send theirs.
    func beginDrain() {
        let (idle, fresh) = state.withLockedValue { state -> ([any Channel], [any Channel]) in
            state.draining = true
            let idle = state.entries.values.filter { $0.idle && $0.served > 0 }.map(\.channel)
            let fresh = state.entries.values.filter { $0.idle && $0.served == 0 }.map(\.channel)
            return (idle, fresh)
        }
        for channel in idle { channel.close(promise: nil) }
        for channel in fresh { closeIfStillFresh(channel) }
    }

    private func closeIfStillFresh(_ channel: any Channel) {
        channel.eventLoop.scheduleTask(in: freshConnectionGrace) { [self] in
            let stillIdle = state.withLockedValue { $0.entries[ObjectIdentifier(channel)]?.idle ?? false }
            if stillIdle { channel.close(promise: nil) }
        }
    }
}

extension ConnectionRegistry {
    /// Closes every connection now (a fast stop).
    func closeAll() {
        let channels = state.withLockedValue { $0.entries.values.map(\.channel) }
        for channel in channels { channel.close(promise: nil) }
    }
}
