import NIOCore
import NIOEmbedded
import Testing

@testable import Redis

/// Pipelining on one connection: commands written in order, replies matched to them in
/// order, deadlines, and what a close or bad bytes do to the commands left.
@Suite struct RedisCommandHandlerTests {
    @Test func commandsAreArraysOfBulkStrings() {
        #expect(encoded("SET", "k", "héllo") == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\nhéllo\r\n")
        #expect(encoded("PING") == "*1\r\n$4\r\nPING\r\n")
        #expect(encoded("SET", "", "x") == "*3\r\n$3\r\nSET\r\n$0\r\n\r\n$1\r\nx\r\n")
    }

    @Test func repliesAreMatchedInOrder() throws {
        let redis = try EmbeddedRedis()
        let first = Outcome(redis.connection.send(command: RedisCommand("GET", "a")))
        let second = Outcome(redis.connection.send(command: RedisCommand("INCR", "b")))
        let third = Outcome(redis.connection.send(command: RedisCommand("PING")))
        #expect(try redis.written() == encoded("GET", "a") + encoded("INCR", "b") + encoded("PING"))
        try redis.reply("$1\r\nx\r\n:2\r")
        #expect(first.value == .bulkString(ByteBuffer(string: "x")))
        #expect(second.isPending)
        try redis.reply("\n+PONG\r\n")
        #expect(second.value == .integer(2))
        #expect(third.value == .simpleString("PONG"))
    }

    @Test func anErrorReplyFailsOnlyItsCommand() throws {
        let redis = try EmbeddedRedis()
        let failing = Outcome(redis.connection.send(command: RedisCommand("INCR", "s")))
        let next = Outcome(redis.connection.send(command: RedisCommand("GET", "s")))
        try redis.reply("-ERR value is not an integer or out of range\r\n$-1\r\n")
        #expect(failing.error == .server("ERR value is not an integer or out of range"))
        #expect(failing.error?.kind == "server")
        #expect(next.value == .bulkString(nil))
        #expect(redis.channel.isActive)
    }

    @Test func aCommandPastItsDeadlineFailsAndItsLateReplyIsDropped() throws {
        var configuration = RedisConfiguration()
        configuration.commandTimeout = .milliseconds(25)
        let redis = try EmbeddedRedis(configuration: configuration)
        let slow = Outcome(redis.connection.send(command: RedisCommand("GET", "slow")))
        redis.loop.advanceTime(by: .milliseconds(10))
        let later = Outcome(redis.connection.send(command: RedisCommand("GET", "later")))
        redis.loop.advanceTime(by: .milliseconds(14))
        #expect(slow.isPending)
        redis.loop.advanceTime(by: .milliseconds(1))
        #expect(slow.error == .timeout)
        #expect(later.isPending)
        // The late reply is the slow command's: taken in turn and dropped.
        try redis.reply("$4\r\nslow\r\n")
        #expect(later.isPending)
        try redis.reply("$5\r\nlater\r\n")
        #expect(later.value == .bulkString(ByteBuffer(string: "later")))
        redis.loop.advanceTime(by: .seconds(1))
        #expect(redis.channel.isActive)
    }

    @Test func theSecondOfTwoLateCommandsTimesOutAtItsOwnDeadline() throws {
        let redis = try EmbeddedRedis()
        let first = Outcome(redis.connection.send(command: RedisCommand("PING")))
        redis.loop.advanceTime(by: .milliseconds(20))
        let second = Outcome(redis.connection.send(command: RedisCommand("PING")))
        redis.loop.advanceTime(by: .milliseconds(5))
        #expect(first.error == .timeout && second.isPending)
        redis.loop.advanceTime(by: .milliseconds(19))
        #expect(second.isPending)
        redis.loop.advanceTime(by: .milliseconds(1))
        #expect(second.error == .timeout)
    }

    @Test func aCloseFailsEveryCommandLeft() throws {
        let redis = try EmbeddedRedis()
        let pending = [Outcome(redis.connection.send(command: RedisCommand("PING"))), Outcome(redis.connection.send(command: RedisCommand("PING")))]
        try redis.reply("+PONG\r\n")
        try redis.channel.close().wait()
        #expect(pending[0].value == .simpleString("PONG"))
        #expect(pending[1].error == .connectionClosed)
        #expect(Outcome(redis.connection.send(command: RedisCommand("PING"))).error == .connectionClosed)
    }

    @Test func bytesThatAreNotRESPCloseTheConnection() throws {
        let redis = try EmbeddedRedis()
        let pending = Outcome(redis.connection.send(command: RedisCommand("PING")))
        try redis.reply("!nonsense\r\n")
        #expect(pending.error?.kind == "protocol")
        #expect(!redis.channel.isActive)
    }

    @Test func aReplyNobodyAskedForClosesTheConnection() throws {
        let redis = try EmbeddedRedis()
        try redis.reply("+OK\r\n")
        #expect(!redis.channel.isActive)
    }
}
