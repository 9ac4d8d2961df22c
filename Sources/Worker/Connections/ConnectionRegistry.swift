import NIOConcurrencyHelpers
import NIOCore
import Shared

/// The worker's open connections and whether each is between requests, so a graceful
/// drain can close the idle ones at once, let busy ones finish their response, and give a
/// connection accepted just before the drain the chance to deliver its first request
/// (closing it unread would reset a client that did nothing wrong).
final class ConnectionRegistry: Sendable {
    /// One connection's standing, held by its handler so that a request's start and end
    /// touch no dictionary (a dictionary's in-place update allocates its accessor's frame).
    /// `idle` and `served` are read and written under the registry's lock only.
    final class Entry: @unchecked Sendable {
        let channel: any Channel
        fileprivate var idle = true
        fileprivate var served = 0

        fileprivate init(channel: any Channel) {
            self.channel = channel
        }
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var draining = false
    }

    private let state = NIOLockedValueBox(State())
    /// How long a connection that has not sent its first request may still send it once
    /// the drain began.
    let freshConnectionGrace: TimeAmount

    /// Where the count of open connections is published for ``AcceptBalance`` (nil: nowhere).
    private let slot: WorkerSlot?

    init(slot: WorkerSlot? = nil, freshConnectionGrace: TimeAmount = .seconds(2)) {
        self.slot = slot
        self.freshConnectionGrace = freshConnectionGrace
    }

    var isDraining: Bool { state.withLockedValue { $0.draining } }

    /// Connections open now.
    var count: Int { state.withLockedValue { $0.entries.count } }

    /// Adds a connection (one accepted just as the drain began gets the same grace).
    func register(_ channel: any Channel) -> Entry {
        let entry = Entry(channel: channel)
        let draining = state.withLockedValue { state in
            state.entries[ObjectIdentifier(channel)] = entry
            return state.draining
        }
        slot?.connectionOpened()
        if draining { closeIfStillFresh(entry) }
        return entry
    }

    func unregister(_ entry: Entry) {
        let removed = state.withLockedValue { $0.entries.removeValue(forKey: ObjectIdentifier(entry.channel)) }
        if removed != nil { slot?.connectionClosed() }
    }

    /// A request head arrived on the entry's connection.
    func requestStarted(_ entry: Entry) {
        state.withLockedValue { _ in entry.idle = false }
    }

    /// The entry's connection finished a response; returns true when it should close now
    /// (draining).
    func requestFinished(_ entry: Entry) -> Bool {
        state.withLockedValue { state in
            entry.idle = true
            entry.served += 1
            return state.draining
        }
    }

    /// Starts the drain: closes idle connections that have served a request; fresh ones
    /// get ``freshConnectionGrace`` to send theirs.
    func beginDrain() {
        let (idle, fresh) = state.withLockedValue { state -> ([any Channel], [Entry]) in
            state.draining = true
            let idle = state.entries.values.filter { $0.idle && $0.served > 0 }.map(\.channel)
            let fresh = state.entries.values.filter { $0.idle && $0.served == 0 }
            return (idle, fresh)
        }
        for channel in idle { channel.close(promise: nil) }
        for entry in fresh { closeIfStillFresh(entry) }
    }

    private func closeIfStillFresh(_ entry: Entry) {
        entry.channel.eventLoop.scheduleTask(in: freshConnectionGrace) { [self] in
            let stillIdle = state.withLockedValue { _ in entry.idle }
            if stillIdle { entry.channel.close(promise: nil) }
        }
    }
}

extension ConnectionRegistry {
    /// The drain timeout is over: each connection ends its response as it can (streams
    /// with an error event and `[DONE]`) and closes; whatever is still open `grace` later
    /// is closed.
    func drainDeadlineReached(grace: TimeAmount = .milliseconds(500)) {
        let channels = state.withLockedValue { $0.entries.values.map(\.channel) }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(DrainDeadlineReached())
            channel.eventLoop.scheduleTask(in: grace) { channel.close(promise: nil) }
        }
    }

    /// Closes every connection now (a fast stop).
    func closeAll() {
        let channels = state.withLockedValue { $0.entries.values.map(\.channel) }
        for channel in channels { channel.close(promise: nil) }
    }
}
