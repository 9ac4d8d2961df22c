import Foundation
import NIOCore
import NIOPosix
import Redis
import RedisURLParsing
import Testing

/// A private `redis-server` for one test, on 127.0.0.1 and a free port, no persistence;
/// killed when the test's body returns. redis-server missing fails the test unless
/// `LLM_GATEWAY_SKIP_REDIS=1` says to skip (as in RedisTests' RealRedisTests).
struct RedisServer {
    static let path: String? = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
        .map { "\($0)/redis-server" }
        .first { FileManager.default.isExecutableFile(atPath: $0) }
    static let skip = ProcessInfo.processInfo.environment["LLM_GATEWAY_SKIP_REDIS"] == "1"
    /// For `@Test(.enabled(if:))`.
    static let available = path != nil || !skip

    let url: RedisURL
    let group: MultiThreadedEventLoopGroup

    /// Runs `body` with a server up and a group of `threads` event loops.
    static func with(threads: Int = 1, _ body: (RedisServer) async throws -> Void) async throws {
        guard let path else {
            Issue.record("redis-server is not on PATH: install it (scripts/setup-deps redis-server) or set LLM_GATEWAY_SKIP_REDIS=1")
            return
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = probe.localAddress!.port!
        try await probe.close().get()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", "pw", "--logfile", ""]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let server = RedisServer(url: RedisURL(host: "127.0.0.1", port: port, password: "pw"), group: group)
        let outcome: Result<Void, any Error>
        do {
            try await body(server)
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try await group.shutdownGracefully()
        try outcome.get()
    }

    /// A connection on the group's next loop, retrying while the server starts (up to 10 s).
    /// Generous deadlines: a loaded CI machine; the short default is the client's tests' job.
    func connect() async throws -> RedisConnection {
        var configuration = RedisConfiguration()
        configuration.commandTimeout = .seconds(5)
        configuration.connectTimeout = .seconds(5)
        let loop = group.next()
        for _ in 0..<100 {
            if let connection = try? await RedisConnection.connect(to: url, configuration: configuration, on: loop).get() { return connection }
            try await Task.sleep(for: .milliseconds(100))
        }
        return try await RedisConnection.connect(to: url, configuration: configuration, on: loop).get()
    }
}
