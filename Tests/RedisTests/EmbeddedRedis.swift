import NIOCore
import NIOEmbedded

@testable import Redis

/// A ``RedisConnection`` on an `EmbeddedChannel`: the test reads what it writes and feeds
/// it Redis's replies, on a clock the test moves.
struct EmbeddedRedis {
    let channel: EmbeddedChannel
    let connection: RedisConnection
    var loop: EmbeddedEventLoop { channel.embeddedEventLoop }

    init(configuration: RedisConfiguration = RedisConfiguration(), loop: EmbeddedEventLoop = EmbeddedEventLoop()) throws {
        channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        connection = try RedisConnection(channel: channel, configuration: configuration)
    }

    /// Everything written since the last call, as text, once the event-loop pass that wrote
    /// it is over (the connection flushes then).
    func written() throws -> String {
        loop.run()
        var text = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { text += buffer.readString(length: buffer.readableBytes)! }
        return text
    }

    /// Redis's bytes arrive (several replies may be in one read).
    func reply(_ text: String) throws { try channel.writeInbound(ByteBuffer(string: text)) }
}

/// What a future came to, watched on its (embedded, so this thread's) event loop.
final class Outcome<Value> {
    private(set) var result: Result<Value, any Error>?

    init(_ future: EventLoopFuture<Value>) {
        future.assumeIsolated().whenComplete { self.result = $0 }
    }

    var isPending: Bool { result == nil }
    var value: Value? { try? result?.get() }
    var error: RedisError? {
        guard case .failure(let error) = result else { return nil }
        return error as? RedisError
    }
}

/// `command` as Redis reads it.
func encoded(_ arguments: String...) -> String {
    var buffer = ByteBuffer()
    RedisCommand(arguments: arguments).encode(into: &buffer)
    return String(buffer: buffer)
}
