import NIOCore
import NIOPosix
import NIOSSL
import RedisURLParsing

/// One connection to Redis on one event loop (the gateway keeps one per worker loop, so a
/// command never changes thread): connected, logged in (`AUTH`) and on its database
/// (`SELECT`) before it is handed out; commands pipelined, each with a deadline.
///
/// Call it on its event loop; a call from elsewhere hops there first.
public final class RedisConnection: Sendable {
    let channel: any Channel
    private let handler: NIOLoopBound<RedisCommandHandler>
    private let commandTimeout: TimeAmount

    /// The loop the connection lives on: call it there.
    public var eventLoop: any EventLoop { channel.eventLoop }

    /// Puts the decoder and the command handler on `channel` (on its event loop).
    init(channel: any Channel, configuration: RedisConfiguration) throws {
        channel.eventLoop.preconditionInEventLoop()
        let handler = RedisCommandHandler()
        try channel.pipeline.syncOperations.addHandlers([
            ByteToMessageHandler(RESPDecoder(limits: configuration.decoderLimits)), handler,
        ])
        self.channel = channel
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
        self.commandTimeout = configuration.commandTimeout
    }

    /// Connects to `url` on `eventLoop` (TLS for `rediss://`), then sends `AUTH` and
    /// `SELECT` as the URL asks; the connection once both succeeded.
    public static func connect(
        to url: RedisURL, configuration: RedisConfiguration = RedisConfiguration(), on eventLoop: any EventLoop
    ) -> EventLoopFuture<RedisConnection> {
        do {
            let tls = url.tls ? try NIOSSLContext(configuration: configuration.tls) : nil
            return connect(to: url, configuration: configuration, tls: tls, on: eventLoop)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    /// ``connect(to:configuration:on:)`` with the TLS context made once by the caller.
    static func connect(
        to url: RedisURL, configuration: RedisConfiguration, tls: NIOSSLContext?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<RedisConnection> {
        let address = try? SocketAddress(ipAddress: url.host, port: url.port)
        // SNI takes a name, never an address literal.
        let serverHostname = address == nil ? url.host : nil
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                    }
                }
            }
        let connecting = address.map { bootstrap.connect(to: $0) } ?? bootstrap.connect(host: url.host, port: url.port)
        return connecting.flatMap { channel in
            do {
                let connection = try RedisConnection(channel: channel, configuration: configuration)
                return connection.handshake(url: url, timeout: configuration.connectTimeout)
                    .map { connection }
                    .flatMapErrorThrowing { error in
                        channel.close(promise: nil)
                        throw error
                    }
            } catch {
                channel.close(promise: nil)
                return channel.eventLoop.makeFailedFuture(error)
            }
        }
    }

    /// `AUTH` (with the user when the URL names one) and `SELECT` (unless database 0), in
    /// that order in one write; succeeds when both did (at once when neither is needed).
    func handshake(url: RedisURL, timeout: TimeAmount) -> EventLoopFuture<Void> {
        var commands: [RedisCommand] = []
        if let password = url.password {
            commands.append(url.user.map { RedisCommand("AUTH", $0, password) } ?? RedisCommand("AUTH", password))
        }
        if url.database != 0 { commands.append(RedisCommand("SELECT", String(url.database))) }
        let deadline = eventLoop.now + timeout
        let replies = commands.enumerated().map { index, command in
            send(command, deadline: deadline, flush: index == commands.count - 1)
        }
        return EventLoopFuture.andAllSucceed(replies, on: eventLoop)
    }

    /// Sends `command`; its reply, or ``RedisError`` (`server` for an error reply,
    /// `timeout` after the command deadline, `connectionClosed`).
    public func send(command: RedisCommand) -> EventLoopFuture<RESPValue> {
        guard eventLoop.inEventLoop else { return eventLoop.flatSubmit { self.send(command: command) } }
        return send(command, deadline: eventLoop.now + commandTimeout)
    }

    /// Runs `script` with `EVALSHA`; on `NOSCRIPT` loads it (`SCRIPT LOAD`) and runs it once
    /// more, both in one write and within the first attempt's deadline.
    public func evalSHA(script: RedisScript, keys: [String], args: [String]) -> EventLoopFuture<RESPValue> {
        guard eventLoop.inEventLoop else { return eventLoop.flatSubmit { self.evalSHA(script: script, keys: keys, args: args) } }
        let deadline = eventLoop.now + commandTimeout
        let command = script.evalSHA(keys: keys, args: args)
        return send(command, deadline: deadline).flatMapError { error in
            guard let error = error as? RedisError, error.isServerError("NOSCRIPT") else {
                return self.eventLoop.makeFailedFuture(error)
            }
            let loaded = self.send(script.load, deadline: deadline, flush: false)
            let retried = self.send(command, deadline: deadline)
            // A script that does not load says why; else the retry's answer.
            return loaded.flatMap { _ in retried }
        }
    }

    /// Closes the connection; commands still waiting fail with `connectionClosed`.
    public func close() -> EventLoopFuture<Void> { channel.close() }

    /// Succeeds when the connection has closed, for whatever reason.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// On the event loop.
    func send(_ command: RedisCommand, deadline: NIODeadline, flush: Bool = true) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        handler.value.send(command, deadline: deadline, promise: promise, flush: flush)
        return promise.futureResult
    }
}
