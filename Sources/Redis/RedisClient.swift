import NIOCore
import NIOSSL
import RedisURLParsing

/// Redis for one event loop: owns one ``RedisConnection`` on it and keeps it up —
/// reconnecting with backoff (``RedisReconnectStateMachine`` decides when) — and fails a
/// command at once with ``RedisError/notConnected`` while there is none, so a caller never
/// waits for a connection.
///
/// Call it on its event loop (the gateway makes one per worker loop); a call from
/// elsewhere hops there first.
public final class RedisClient: Sendable {
    /// The loop the client and its connection live on: call it there.
    public let eventLoop: any EventLoop
    private let driver: NIOLoopBoundBox<Driver>

    /// A client for `url` on `eventLoop`; nothing connects before ``start()``. `random`
    /// draws the backoff's jitter. Throws when the TLS configuration cannot be used.
    public convenience init(
        url: RedisURL, configuration: RedisConfiguration = RedisConfiguration(), eventLoop: any EventLoop,
        random: some RandomNumberGenerator & Sendable = SystemRandomNumberGenerator()
    ) throws {
        let tls = url.tls ? try NIOSSLContext(configuration: configuration.tls) : nil
        self.init(eventLoop: eventLoop, backoff: configuration.backoff, random: random) { eventLoop in
            RedisConnection.connect(to: url, configuration: configuration, tls: tls, on: eventLoop)
        }
    }

    /// A client whose connections come from `connect` (the tests' connections on an
    /// `EmbeddedChannel`).
    init(
        eventLoop: any EventLoop, backoff: RedisConfiguration.Backoff, random: some RandomNumberGenerator & Sendable,
        connect: @escaping @Sendable (any EventLoop) -> EventLoopFuture<RedisConnection>
    ) {
        self.eventLoop = eventLoop
        let driver = Driver(eventLoop: eventLoop, machine: RedisReconnectStateMachine(backoff: backoff, random: random), connect: connect)
        self.driver = NIOLoopBoundBox.makeBoxSendingValue(driver, eventLoop: eventLoop)
    }

    /// Starts connecting (once; later calls do nothing).
    public func start() {
        guard eventLoop.inEventLoop else { return eventLoop.execute { self.start() } }
        driver.value.perform(driver.value.machine.start())
    }

    /// True while a connection is up (on the event loop).
    public var isConnected: Bool { driver.value.machine.isConnected }

    /// Why the last connection attempt failed, for a log line (nil while connected, or
    /// before any attempt failed): a ``RedisError`` (an `AUTH` or `SELECT` refused, a
    /// deadline) or the socket's error. Never carries the password.
    public var lastConnectError: (any Error)? {
        guard eventLoop.inEventLoop else { return nil }
        return driver.value.lastConnectError
    }

    /// Succeeds when the first connection attempt has ended, whether it connected or not
    /// (it takes at most the connect timeout): a gateway starting next to its Redis waits
    /// for it once rather than meeting its first requests with no connection.
    public func firstAttemptEnded() -> EventLoopFuture<Void> {
        guard eventLoop.inEventLoop else { return eventLoop.flatSubmit { self.firstAttemptEnded() } }
        let driver = driver.value
        guard !driver.firstAttemptEnded else { return eventLoop.makeSucceededVoidFuture() }
        let promise = driver.firstAttemptWaiter ?? eventLoop.makePromise()
        driver.firstAttemptWaiter = promise
        return promise.futureResult
    }

    /// Sends `command` on the connection; ``RedisError/notConnected`` at once when none is up.
    public func send(command: RedisCommand) -> EventLoopFuture<RESPValue> {
        guard eventLoop.inEventLoop else { return eventLoop.flatSubmit { self.send(command: command) } }
        guard let connection = driver.value.connection else { return eventLoop.makeFailedFuture(RedisError.notConnected) }
        return connection.send(command: command)
    }

    /// ``RedisConnection/evalSHA(script:keys:args:)`` on the connection;
    /// ``RedisError/notConnected`` at once when none is up.
    public func evalSHA(script: RedisScript, keys: [String], args: [String]) -> EventLoopFuture<RESPValue> {
        guard eventLoop.inEventLoop else { return eventLoop.flatSubmit { self.evalSHA(script: script, keys: keys, args: args) } }
        guard let connection = driver.value.connection else { return eventLoop.makeFailedFuture(RedisError.notConnected) }
        return connection.evalSHA(script: script, keys: keys, args: args)
    }

    /// Stops reconnecting and closes the connection; succeeds once it is closed.
    public func shutdown() -> EventLoopFuture<Void> {
        guard eventLoop.inEventLoop else { return eventLoop.flatSubmit { self.shutdown() } }
        let connection = driver.value.connection
        driver.value.perform(driver.value.machine.shutdown())
        return connection?.closeFuture ?? eventLoop.makeSucceededVoidFuture()
    }
}

extension RedisClient {
    /// The client's state on its event loop: the machine, the connection, the timer; does
    /// what the machine answers.
    final class Driver {
        let eventLoop: any EventLoop
        var machine: RedisReconnectStateMachine
        /// The connection while the machine is `connected`.
        private(set) var connection: RedisConnection?
        private var timer: Scheduled<Void>?
        private let connect: @Sendable (any EventLoop) -> EventLoopFuture<RedisConnection>
        /// Why the last connection attempt failed (nil once one succeeds).
        private(set) var lastConnectError: (any Error)?
        /// True once the first attempt ended (or the client shut down).
        private(set) var firstAttemptEnded = false
        /// Who waits for that (made only when someone asks).
        var firstAttemptWaiter: EventLoopPromise<Void>?

        init(
            eventLoop: any EventLoop, machine: RedisReconnectStateMachine,
            connect: @escaping @Sendable (any EventLoop) -> EventLoopFuture<RedisConnection>
        ) {
            self.eventLoop = eventLoop
            self.machine = machine
            self.connect = connect
        }

        func perform(_ action: RedisReconnectStateMachine.Action) {
            switch action {
            case .none:
                break
            case .connect:
                connect(eventLoop).assumeIsolated().whenComplete { [self] result in
                    switch result {
                    case .success(let connection): connected(connection)
                    case .failure(let error):
                        lastConnectError = error
                        perform(machine.connectFailed(now: eventLoop.now))
                    }
                    endFirstAttempt()  // after: a waiter sees the connection up
                }
            case .scheduleTimer(let deadline):
                timer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
                    timer = nil
                    perform(machine.timerFired(now: eventLoop.now))
                }
            case .closeConnection:
                connection?.channel.close(promise: nil)
                connection = nil
            case .cancelTimer:
                timer?.cancel()
                timer = nil
            }
            if machine.state == .shutDown { endFirstAttempt() }
        }

        private func endFirstAttempt() {
            firstAttemptEnded = true
            firstAttemptWaiter?.succeed()
            firstAttemptWaiter = nil
        }

        private func connected(_ new: RedisConnection) {
            let action = machine.connectSucceeded()
            guard action == .none else {
                new.channel.close(promise: nil)  // shut down meanwhile
                return
            }
            connection = new
            lastConnectError = nil
            new.closeFuture.assumeIsolated().whenComplete { [self] _ in
                guard connection === new else { return }
                connection = nil
                perform(machine.connectionClosed(now: eventLoop.now))
            }
        }
    }
}
