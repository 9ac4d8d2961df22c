import NIOCore
import NIOEmbedded
import Testing

@testable import Redis

/// The RESP2 decoder behind a `ByteToMessageHandler`: the same replies however the bytes
/// are split or coalesced, every type (null and nested too), and refusal of what exceeds
/// its limits or is not RESP2.
@Suite struct RESPDecoderTests {
    /// One of each type, nulls, empties, nesting, and a bulk string holding CRLF.
    static let replies = [
        "+OK\r\n", "-ERR bad thing\r\n", ":42\r\n", ":-7\r\n", "$5\r\nhello\r\n", "$0\r\n\r\n", "$-1\r\n", "*-1\r\n", "*0\r\n",
        "*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n+x\r\n", "$4\r\na\r\nb\r\n",
    ]
    static let values: [RESPValue] = [
        .simpleString("OK"), .error("ERR bad thing"), .integer(42), .integer(-7), .bulkString(ByteBuffer(string: "hello")),
        .bulkString(ByteBuffer()), .bulkString(nil), .array(nil), .array([]),
        .array([.integer(1), .array([.bulkString(ByteBuffer(string: "a")), .bulkString(nil)]), .simpleString("x")]),
        .bulkString(ByteBuffer(string: "a\r\nb")),
    ]

    static func decoder(_ limits: RESPDecoder.Limits = RESPDecoder.Limits()) -> EmbeddedChannel {
        EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder(limits: limits)))
    }

    static func decoded(_ channel: EmbeddedChannel) throws -> [RESPValue] {
        var values: [RESPValue] = []
        while let value = try channel.readInbound(as: RESPValue.self) { values.append(value) }
        return values
    }

    @Test func coalescedRepliesInOneRead() throws {
        let channel = Self.decoder()
        try channel.writeInbound(ByteBuffer(string: Self.replies.joined()))
        #expect(try Self.decoded(channel) == Self.values)
        #expect(try channel.finish().isClean)
    }

    @Test func splitAtEveryByte() throws {
        let bytes = Array(Self.replies.joined().utf8)
        for split in 0...bytes.count {
            let channel = Self.decoder()
            try channel.writeInbound(ByteBuffer(bytes: bytes[..<split]))
            try channel.writeInbound(ByteBuffer(bytes: bytes[split...]))
            #expect(try Self.decoded(channel) == Self.values, "split at \(split)")
        }
    }

    @Test func oneByteAtATime() throws {
        let channel = Self.decoder()
        var values: [RESPValue] = []
        for byte in Self.replies.joined().utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            values += try Self.decoded(channel)
        }
        #expect(values == Self.values)
    }

    @Test func integersAtTheirLimits() throws {
        let channel = Self.decoder()
        try channel.writeInbound(ByteBuffer(string: ":9223372036854775807\r\n:-9223372036854775808\r\n:0\r\n"))
        #expect(try Self.decoded(channel) == [.integer(.max), .integer(.min), .integer(0)])
    }

    @Test func accessors() {
        #expect(RESPValue.bulkString(ByteBuffer(string: "12")).integer == 12)
        #expect(RESPValue.simpleString("PONG").string == "PONG")
        #expect(RESPValue.array([.integer(1)]).array == [.integer(1)])
        #expect(RESPValue.bulkString(nil).isNull && RESPValue.array(nil).isNull && !RESPValue.array([]).isNull)
    }

    /// The decoder's refusal of `bytes`, as the error the channel caught.
    static func refusal(_ bytes: String, limits: RESPDecoder.Limits = RESPDecoder.Limits()) -> RedisError? {
        let channel = decoder(limits)
        return #expect(throws: RedisError.self) { try channel.writeInbound(ByteBuffer(string: bytes)) }
    }

    @Test func overCapLengthsAreRefusedBeforeTheBytesCome() throws {
        var limits = RESPDecoder.Limits()
        limits.maxBulkLength = 10
        limits.maxElements = 3
        limits.maxDepth = 2
        limits.maxLineLength = 8
        limits.maxReplyBytes = 30
        #expect(Self.refusal("$11\r\n", limits: limits) == .protocolViolation("bulk string length 11 above the limit 10"))
        #expect(Self.refusal("$9223372036854775807\r\n")?.kind == "protocol")
        #expect(Self.refusal("*4\r\n", limits: limits) == .protocolViolation("more than 3 array elements in one reply"))
        // Elements count across nested arrays.
        #expect(Self.refusal("*2\r\n:1\r\n*2\r\n", limits: limits)?.kind == "protocol")
        #expect(Self.refusal("*1\r\n*1\r\n*1\r\n", limits: limits) == .protocolViolation("arrays nested deeper than 2"))
        #expect(Self.refusal("+aaaaaaaaaa", limits: limits) == .protocolViolation("line longer than the limit 8 bytes"))
        #expect(Self.refusal("*3\r\n$10\r\n0123456789\r\n$10\r\n", limits: limits)?.kind == "protocol")
        // Within the limits, the same shapes decode.
        let channel = Self.decoder(limits)
        #expect(throws: Never.self) { try channel.writeInbound(ByteBuffer(string: "$10\r\n0123456789\r\n*1\r\n*2\r\n:1\r\n:2\r\n+aaaaaaa\r\n")) }
        #expect(try Self.decoded(channel).count == 3)
    }

    @Test func malformedBytesAreRefused() {
        #expect(Self.refusal("?x\r\n") == .protocolViolation("unknown type byte 0x3f"))
        #expect(Self.refusal("$3\r\nabcX\r\n") == .protocolViolation("bulk string not followed by CRLF"))
        #expect(Self.refusal(":12a\r\n") == .protocolViolation("integer is not a decimal integer"))
        #expect(Self.refusal(":\r\n")?.kind == "protocol")
        #expect(Self.refusal(":-\r\n")?.kind == "protocol")
        #expect(Self.refusal(":99999999999999999999\r\n")?.kind == "protocol")
        #expect(Self.refusal("+OK\rX") == .protocolViolation("CR not followed by LF"))
        #expect(Self.refusal("$-2\r\n") == .protocolViolation("negative bulk string length -2"))
        #expect(Self.refusal("*-5\r\n") == .protocolViolation("negative array count -5"))
    }
}
