import HTTP1
import NIOCore
import NIOEmbedded
import Shared
import Testing

@testable import Worker

/// The pool's keep-alive limit (`UPSTREAM_KEEPALIVE_TIMEOUT`) on an embedded loop whose clock
/// the test moves: an idle connection is reused before the limit and never at or after it.
@Suite struct UpstreamPoolTests {
    final class Receiver: UpstreamResponseHandling {
        var ended = 0
        var failures: [UpstreamFailure] = []
        func upstreamHead(_ head: UpstreamResponseHead) {}
        func upstreamBody(_ buffer: ByteBuffer) {}
        func upstreamReadComplete() {}
        func upstreamEnd() { ended += 1 }
        func upstreamFailed(_ failure: UpstreamFailure) { failures.append(failure) }
    }

    let loop = EmbeddedEventLoop()

    func pool(idleTimeout: Double) throws -> UpstreamPool {
        UpstreamPool(
            url: try #require(UpstreamURL(parsing: "http://127.0.0.1:18000")), eventLoop: loop, connectTimeout: 1,
            timeout: 300, idleTimeout: idleTimeout, authorization: nil, tls: nil)
    }

    /// A connected channel with the pool's handler on it.
    func connection(of pool: UpstreamPool) throws -> (UpstreamConnection, EmbeddedChannel) {
        let connection = UpstreamConnection(pool: pool)
        let channel = EmbeddedChannel(handler: connection, loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 18000)).wait()
        return (connection, channel)
    }

    /// One request and its keep-alive response, which hands the connection back to the pool.
    func exchange(_ connection: UpstreamConnection, on channel: EmbeddedChannel) throws {
        let receiver = Receiver()
        connection.send(UpstreamConnectionTests.request, body: ByteBuffer(string: "{}"), to: receiver, reused: false)
        _ = try channel.readOutbound(as: ByteBuffer.self)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"))
        #expect(receiver.ended == 1 && receiver.failures.isEmpty)
    }

    @Test func anIdleConnectionIsReusedUntilTheLimitAndClosedByTheSweepAfterIt() throws {
        let pool = try pool(idleTimeout: 2)  // swept every 0.5 s
        let (connection, channel) = try connection(of: pool)
        try exchange(connection, on: channel)
        loop.advanceTime(by: .milliseconds(1900))
        #expect(pool.takeIdle(now: loop.now) === connection)
        try exchange(connection, on: channel)  // idle again from 1.9 s: expires at 3.9 s
        loop.advanceTime(by: .milliseconds(1950))
        #expect(channel.isActive, "closed before its limit")
        loop.advanceTime(by: .milliseconds(600))  // the sweep at 4.0 s
        #expect(!channel.isActive, "still open a sweep after its limit")
        #expect(pool.takeIdle(now: loop.now) == nil)
    }

    @Test func aConnectionPastTheLimitIsNotHandedOutBeforeTheSweepCloses() throws {
        let pool = try pool(idleTimeout: 2)
        let (first, firstChannel) = try connection(of: pool)
        try exchange(first, on: firstChannel)  // sweeps at 0.5, 1.0, … from here
        loop.advanceTime(by: .milliseconds(300))
        let (second, secondChannel) = try connection(of: pool)
        try exchange(second, on: secondChannel)  // idle from 0.3 s: expires at 2.3 s, swept at 2.5 s
        loop.advanceTime(by: .milliseconds(2050))  // 2.35 s: the older one is swept, the newer not yet
        #expect(!firstChannel.isActive && secondChannel.isActive)
        #expect(pool.takeIdle(now: loop.now) == nil, "a connection idle past the limit was handed out")
        #expect(!secondChannel.isActive)
    }

    @Test func zeroKeepsNoConnection() throws {
        let pool = try pool(idleTimeout: 0)
        let (connection, channel) = try connection(of: pool)
        try exchange(connection, on: channel)
        #expect(!channel.isActive)
        #expect(pool.takeIdle(now: loop.now) == nil)
    }
}
