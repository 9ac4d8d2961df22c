import NIOCore
import NIOEmbedded
import RedisURLParsing
import Testing

@testable import Redis

/// What a connection sends before it is handed out (`AUTH`, `SELECT`, in that order) and
/// how `EVALSHA` recovers from `NOSCRIPT`.
@Suite struct RedisConnectionTests {
    @Test func authWithUserThenSelectInOneWrite() throws {
        let redis = try EmbeddedRedis()
        let url = try RedisURL(parsing: "redis://gateway:p%40ss@redis.internal:6380/3")
        let handshake = Outcome(redis.connection.handshake(url: url, timeout: .seconds(1)))
        #expect(try redis.written() == encoded("AUTH", "gateway", "p@ss") + encoded("SELECT", "3"))
        try redis.reply("+OK\r\n")
        #expect(handshake.isPending)
        try redis.reply("+OK\r\n")
        #expect(handshake.result != nil && handshake.error == nil)
    }

    @Test func authWithPasswordOnlyAndDatabaseZero() throws {
        let redis = try EmbeddedRedis()
        let handshake = Outcome(redis.connection.handshake(url: try RedisURL(parsing: "redis://:secret@h"), timeout: .seconds(1)))
        #expect(try redis.written() == encoded("AUTH", "secret"))
        try redis.reply("+OK\r\n")
        #expect(handshake.result != nil && handshake.error == nil)
    }

    @Test func nothingToSendWithoutPasswordOrDatabase() throws {
        let redis = try EmbeddedRedis()
        let handshake = Outcome(redis.connection.handshake(url: try RedisURL(parsing: "redis://h"), timeout: .seconds(1)))
        #expect(try redis.written() == "")
        #expect(handshake.result != nil && handshake.error == nil)
    }

    @Test func aRefusedAuthFailsTheHandshake() throws {
        let redis = try EmbeddedRedis()
        let handshake = Outcome(redis.connection.handshake(url: try RedisURL(parsing: "redis://:wrong@h/1"), timeout: .seconds(1)))
        try redis.reply("-WRONGPASS invalid username-password pair or user is disabled.\r\n-NOAUTH Authentication required.\r\n")
        #expect(handshake.error?.isServerError("WRONGPASS") == true)
    }

    @Test func aSilentServerFailsTheHandshakeAtItsTimeout() throws {
        let redis = try EmbeddedRedis()
        let handshake = Outcome(redis.connection.handshake(url: try RedisURL(parsing: "redis://:pw@h"), timeout: .seconds(1)))
        redis.loop.advanceTime(by: .milliseconds(999))
        #expect(handshake.isPending)
        redis.loop.advanceTime(by: .milliseconds(1))
        #expect(handshake.error == .timeout)
    }

    static let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")

    @Test func scriptSHA1IsRedisName() {
        #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }

    @Test func evalSHARunsTheScriptByItsDigest() throws {
        let redis = try EmbeddedRedis()
        let result = Outcome(redis.connection.evalSHA(script: Self.script, keys: ["{k}:n"], args: ["5"]))
        #expect(try redis.written() == encoded("EVALSHA", Self.script.sha1, "1", "{k}:n", "5"))
        try redis.reply(":5\r\n")
        #expect(result.value == .integer(5))
    }

    @Test func noScriptLoadsTheScriptAndRetriesOnce() throws {
        let redis = try EmbeddedRedis()
        let result = Outcome(redis.connection.evalSHA(script: Self.script, keys: ["{k}:n"], args: ["5"]))
        _ = try redis.written()
        try redis.reply("-NOSCRIPT No matching script. Please use EVAL.\r\n")
        #expect(result.isPending)
        #expect(
            try redis.written()
                == encoded("SCRIPT", "LOAD", Self.script.source) + encoded("EVALSHA", Self.script.sha1, "1", "{k}:n", "5"))
        try redis.reply("$40\r\n\(Self.script.sha1)\r\n:5\r\n")
        #expect(result.value == .integer(5))
    }

    @Test func aSecondNoScriptIsTheAnswer() throws {
        let redis = try EmbeddedRedis()
        let result = Outcome(redis.connection.evalSHA(script: Self.script, keys: [], args: []))
        try redis.reply("-NOSCRIPT No matching script.\r\n")
        _ = try redis.written()
        try redis.reply("$40\r\n\(Self.script.sha1)\r\n-NOSCRIPT No matching script.\r\n")
        #expect(result.error?.isServerError("NOSCRIPT") == true)
        #expect(try redis.written() == "")
    }

    @Test func aScriptThatDoesNotLoadSaysWhy() throws {
        let redis = try EmbeddedRedis()
        let result = Outcome(redis.connection.evalSHA(script: RedisScript("return ("), keys: [], args: []))
        try redis.reply("-NOSCRIPT No matching script.\r\n-ERR Error compiling script\r\n-NOSCRIPT No matching script.\r\n")
        #expect(result.error == .server("ERR Error compiling script"))
    }

    @Test func otherErrorsAreNotRetried() throws {
        let redis = try EmbeddedRedis()
        let result = Outcome(redis.connection.evalSHA(script: Self.script, keys: ["k"], args: ["x"]))
        _ = try redis.written()
        try redis.reply("-ERR value is not an integer\r\n")
        #expect(result.error == .server("ERR value is not an integer"))
        #expect(try redis.written() == "")
    }

    @Test func theRetryKeepsTheFirstDeadline() throws {
        let redis = try EmbeddedRedis()
        let result = Outcome(redis.connection.evalSHA(script: Self.script, keys: [], args: []))
        redis.loop.advanceTime(by: .milliseconds(20))
        try redis.reply("-NOSCRIPT No matching script.\r\n")
        redis.loop.advanceTime(by: .milliseconds(5))
        #expect(result.error == .timeout)
    }

    @Test func serverErrorCodesAreWholeWords() {
        #expect(RedisError.server("NOSCRIPT No matching script.").isServerError("NOSCRIPT"))
        #expect(RedisError.server("NOSCRIPT").isServerError("NOSCRIPT"))
        #expect(!RedisError.server("NOSCRIPTS x").isServerError("NOSCRIPT"))
        #expect(!RedisError.timeout.isServerError("NOSCRIPT"))
    }
}
