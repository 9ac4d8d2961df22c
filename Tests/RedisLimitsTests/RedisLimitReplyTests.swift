import NIOCore
import Redis
import Shared
import Testing

@testable import RedisLimits

/// The scripts' four integers per bucket, decoded; the keys they run on.
@Suite struct RedisLimitReplyTests {
    static func reply(_ numbers: Int64...) -> RESPValue { .array(numbers.map { .integer($0) }) }

    @Test func oneBucket() throws {
        #expect(try RedisLimitReply.outcome(Self.reply(1, 0, 41, 1_200_000)) == .allowed(remaining: 41, resetMicros: 1_200_000))
        #expect(try RedisLimitReply.outcome(Self.reply(0, 350_000, 0, 60_000_000)) == .limited(retryAfterMicros: 350_000, resetMicros: 60_000_000))
    }

    @Test func anAdmissionHasOneOrTwoBuckets() throws {
        #expect(try RedisLimitReply.admission(Self.reply(0, 5, 0, 9)) == RedisAdmission(requests: .limited(retryAfterMicros: 5, resetMicros: 9), tokens: nil))
        let both = try RedisLimitReply.admission(Self.reply(1, 0, 3, 9, 0, 7, 0, 100))
        #expect(both == RedisAdmission(requests: .allowed(remaining: 3, resetMicros: 9), tokens: .limited(retryAfterMicros: 7, resetMicros: 100)))
    }

    @Test func otherShapesAreProtocolErrors() {
        let malformed: [RESPValue] = [
            .integer(1), .array(nil), Self.reply(1, 0, 3), Self.reply(2, 0, 0, 0), Self.reply(1, -1, 0, 0),
            .array([.integer(1), .bulkString(ByteBuffer(string: "0")), .integer(0), .integer(0)]), Self.reply(1, 0, 0, 0, 1),
        ]
        for reply in malformed {
            #expect(throws: RedisError.self) { try RedisLimitReply.admission(reply) }
            let error = #expect(throws: RedisError.self) {
                _ = try RedisLimitReply.outcome(reply, bucket: 1)
                _ = try RedisLimitReply.outcome(reply)
            }
            #expect(error?.kind == "protocol")
        }
    }

    @Test func keysAreHashTaggedKeyIDs() {
        #expect(RedisLimitKeys.requests(0xdead_beef) == "{00000000deadbeef}:req")
        #expect(RedisLimitKeys.tokens(.max) == "{ffffffffffffffff}:tok")
    }

    @Test func argumentsAreTheGCRAsIntervalAndTolerance() {
        #expect(RedisLimitBuckets.args(GCRA(rate: 60)) == ["1000000", "59000000"])
        #expect(RedisLimitBuckets.args(GCRA(rate: 1, periodMicros: .max)) == ["9007199254740991", "0"])
    }

    @Test func scriptsAreDistinct() {
        #expect(Set(RedisLimitScripts.all.map(\.sha1)).count == 4)
    }
}
