import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import Redis

/// The client drives its reconnect machine: commands fail at once while no connection is
/// up, attempts follow the backoff on the loop's clock, a dropped connection is replaced.
@Suite struct RedisClientTests {
    /// Connection attempts the test completes by hand.
    final class Attempts: Sendable {
        let promises = NIOLockedValueBox<[EventLoopPromise<RedisConnection>]>([])
        var count: Int { promises.withLockedValue { $0.count } }
        var last: EventLoopPromise<RedisConnection> { promises.withLockedValue { $0.last! } }
    }

    static func client(on loop: EmbeddedEventLoop) -> (RedisClient, Attempts) {
        var backoff = RedisConfiguration.Backoff()
        backoff.initial = .milliseconds(50)
        backoff.jitter = 0
        let attempts = Attempts()
        let client = RedisClient(eventLoop: loop, backoff: backoff, random: FixedRandom(value: 0)) { loop in
            let promise = loop.makePromise(of: RedisConnection.self)
            attempts.promises.withLockedValue { $0.append(promise) }
            return promise.futureResult
        }
        return (client, attempts)
    }

    @Test func commandsFailAtOnceUntilConnectedAndAfterADrop() throws {
        let loop = EmbeddedEventLoop()
        let (client, attempts) = Self.client(on: loop)
        #expect(Outcome(client.send(command: RedisCommand("PING"))).error == .notConnected)
        client.start()
        client.start()
        #expect(attempts.count == 1)
        #expect(Outcome(client.evalSHA(script: RedisScript("return 1"), keys: [], args: [])).error == .notConnected)

        attempts.last.fail(RedisError.connectionClosed)
        loop.advanceTime(by: .milliseconds(49))
        #expect(attempts.count == 1)
        loop.advanceTime(by: .milliseconds(1))
        #expect(attempts.count == 2)

        let redis = try EmbeddedRedis(loop: loop)
        attempts.last.succeed(redis.connection)
        #expect(client.isConnected)
        let pong = Outcome(client.send(command: RedisCommand("PING")))
        #expect(try redis.written() == encoded("PING"))
        try redis.reply("+PONG\r\n")
        #expect(pong.value == .simpleString("PONG"))

        // The server goes away: at once no connection, and a new attempt after the first step.
        try redis.channel.close().wait()
        loop.run()  // the close future completes in a task of its own
        #expect(!client.isConnected)
        #expect(Outcome(client.send(command: RedisCommand("PING"))).error == .notConnected)
        loop.advanceTime(by: .milliseconds(50))
        #expect(attempts.count == 3)

        // Shut down during an attempt: the connection it makes is closed, nothing follows.
        let shutdown = Outcome(client.shutdown())
        #expect(shutdown.result != nil)
        let late = try EmbeddedRedis(loop: loop)
        attempts.last.succeed(late.connection)
        #expect(!late.channel.isActive && !client.isConnected)
        loop.advanceTime(by: .seconds(60))
        #expect(attempts.count == 3)
    }

    @Test func shutdownClosesTheConnection() throws {
        let loop = EmbeddedEventLoop()
        let (client, attempts) = Self.client(on: loop)
        client.start()
        let redis = try EmbeddedRedis(loop: loop)
        attempts.last.succeed(redis.connection)
        let shutdown = Outcome(client.shutdown())
        loop.run()
        #expect(shutdown.result != nil && shutdown.error == nil)
        #expect(!redis.channel.isActive)
        loop.advanceTime(by: .seconds(60))
        #expect(attempts.count == 1)
    }
}
