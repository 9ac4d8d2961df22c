import Foundation
import NIOCore
import NIOPosix
import RedisURLParsing
import Testing

@testable import Redis

/// The client against a real `redis-server` started by the test on 127.0.0.1 (a free port,
/// no persistence, a password), killed at the end. redis-server missing fails the test
/// unless `LLM_GATEWAY_SKIP_REDIS=1` says to skip it (scripts/test installs it).
@Suite struct RealRedisTests {
    static let serverPath: String? = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
        .map { "\($0)/redis-server" }
        .first { FileManager.default.isExecutableFile(atPath: $0) }
    static let skip = ProcessInfo.processInfo.environment["LLM_GATEWAY_SKIP_REDIS"] == "1"

    @Test(.enabled(if: serverPath != nil || !skip, "LLM_GATEWAY_SKIP_REDIS=1 and no redis-server"))
    func againstRedisServer() async throws {
        guard let serverPath = Self.serverPath else {
            Issue.record("redis-server is not on PATH: install it (scripts/setup-deps redis-server) or set LLM_GATEWAY_SKIP_REDIS=1")
            return
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let port = try await Self.freePort(on: loop)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: serverPath)
        server.arguments = [
            "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", "s3cret", "--logfile", "",
        ]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        let outcome: Result<Void, any Error>
        do {
            try await Self.exercise(port: port, on: loop)
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        // SIGKILL: nothing of it is kept (a SIGTERM was seen to leave it running under the runner).
        kill(server.processIdentifier, SIGKILL)
        server.waitUntilExit()
        try await group.shutdownGracefully()
        try outcome.get()
    }

    /// PING, SET/GET, AUTH with and without a user, SELECT, EVALSHA after NOSCRIPT,
    /// pipelining, and the client, against the server on `port`.
    static func exercise(port: Int, on loop: any EventLoop) async throws {
        // A loaded CI machine: generous deadlines here; the short default is tested embedded.
        var configuration = RedisConfiguration()
        configuration.commandTimeout = .seconds(5)
        configuration.connectTimeout = .seconds(5)
        let url = try RedisURL(parsing: "redis://:s3cret@127.0.0.1:\(port)/2")
        let connection = try await Self.connectWhenUp(url, configuration: configuration, on: loop)

        #expect(try await connection.send(command: RedisCommand("PING")).get() == .simpleString("PONG"))
        #expect(try await connection.send(command: RedisCommand("SET", "greeting", "héllo")).get() == .simpleString("OK"))
        #expect(try await connection.send(command: RedisCommand("GET", "greeting")).get().string == "héllo")

        // AUTH with a user (`default`, the one requirepass sets), database 0: not database 2's key.
        let other = try await RedisConnection.connect(
            to: RedisURL(parsing: "redis://default:s3cret@127.0.0.1:\(port)"), configuration: configuration, on: loop
        ).get()
        #expect(try await other.send(command: RedisCommand("GET", "greeting")).get() == .bulkString(nil))
        try await other.close().get()

        // No password: connected, but refused; a wrong one: the connect fails.
        let anonymous = try await RedisConnection.connect(to: RedisURL(parsing: "redis://127.0.0.1:\(port)"), configuration: configuration, on: loop).get()
        await #expect(throws: RedisError.self) { try await anonymous.send(command: RedisCommand("PING")).get() }
        try await anonymous.close().get()
        let refused = await #expect(throws: RedisError.self) {
            try await RedisConnection.connect(to: RedisURL(parsing: "redis://:wrong@127.0.0.1:\(port)"), configuration: configuration, on: loop).get()
        }
        #expect(refused?.isServerError("WRONGPASS") == true)

        // EVALSHA on a server without the script: NOSCRIPT, SCRIPT LOAD, the retry.
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        _ = try await connection.send(command: RedisCommand("SCRIPT", "FLUSH")).get()
        #expect(try await connection.send(command: RedisCommand("SCRIPT", "EXISTS", script.sha1)).get() == .array([.integer(0)]))
        #expect(try await connection.evalSHA(script: script, keys: ["{k}:n"], args: ["5"]).get() == .integer(5))
        #expect(try await connection.send(command: RedisCommand("SCRIPT", "EXISTS", script.sha1)).get() == .array([.integer(1)]))
        #expect(try await connection.evalSHA(script: script, keys: ["{k}:n"], args: ["5"]).get() == .integer(10))
        #expect(try await connection.send(command: RedisCommand("SCRIPT", "LOAD", script.source)).get().string == script.sha1)

        // Pipelined: many commands in flight on one connection, answered in order.
        let replies = try await loop.flatSubmit {
            EventLoopFuture.whenAllSucceed((1...200).map { _ in connection.send(command: RedisCommand("INCR", "counter")) }, on: loop)
        }.get()
        #expect(replies == (1...200).map { RESPValue.integer(Int64($0)) })
        try await connection.close().get()

        // The client: connects by itself, sends, shuts down.
        let client = try RedisClient(url: url, configuration: configuration, eventLoop: loop)
        client.start()
        for _ in 0..<500 {
            if try await loop.submit({ client.isConnected }).get() { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(try await client.send(command: RedisCommand("GET", "counter")).get().integer == 200)
        try await client.shutdown().get()
        let afterShutdown = await #expect(throws: RedisError.self) { try await client.send(command: RedisCommand("PING")).get() }
        #expect(afterShutdown == .notConnected)
    }

    /// A port nothing listens on now (bound, read, released).
    static func freePort(on loop: any EventLoop) async throws -> Int {
        let channel = try await ServerBootstrap(group: loop).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close().get()
        return port
    }

    /// Connects, retrying while the server starts (up to 10 s).
    static func connectWhenUp(_ url: RedisURL, configuration: RedisConfiguration, on loop: any EventLoop) async throws -> RedisConnection {
        for _ in 0..<100 {
            if let connection = try? await RedisConnection.connect(to: url, configuration: configuration, on: loop).get() { return connection }
            try await Task.sleep(for: .milliseconds(100))
        }
        return try await RedisConnection.connect(to: url, configuration: configuration, on: loop).get()
    }
}
