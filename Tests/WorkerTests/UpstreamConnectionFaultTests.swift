import HTTP1
import NIOCore
import NIOEmbedded
import NIOPosix
import Shared
import Testing

@testable import Worker

#if canImport(Glibc)
    import Glibc
#endif

/// An upstream that misbehaves on a kept-alive connection (issue 20, findings 9, 10, 11):
/// bytes nobody asked for never reach the next request, 1xx heads can neither flood a
/// worker nor hold a request past its deadline, and this host's own limits are not the
/// upstream's fault.
@Suite struct UpstreamConnectionFaultTests {
    final class Receiver: UpstreamResponseHandling {
        var heads: [Int] = []
        var ended = 0
        var failures: [UpstreamFailure] = []
        func upstreamHead(_ head: UpstreamResponseHead) { heads.append(head.status) }
        func upstreamBody(_ buffer: ByteBuffer) {}
        func upstreamReadComplete() {}
        func upstreamEnd() { ended += 1 }
        func upstreamFailed(_ failure: UpstreamFailure) { failures.append(failure) }
    }

    let loop = EmbeddedEventLoop()

    func connected(timeout: Double = 300) throws -> (UpstreamPool, UpstreamConnection, EmbeddedChannel) {
        let pool = UpstreamPool(
            url: try #require(UpstreamURL(parsing: "http://127.0.0.1:18000")), eventLoop: loop, connectTimeout: 1,
            timeout: timeout, idleTimeout: 4, authorization: nil, tls: nil)
        let connection = UpstreamConnection(pool: pool)
        let channel = EmbeddedChannel(handler: connection, loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 18000)).wait()
        return (pool, connection, channel)
    }

    func send(_ connection: UpstreamConnection, on channel: EmbeddedChannel, reused: Bool = false) throws -> Receiver {
        let receiver = Receiver()
        connection.send(UpstreamConnectionTests.request, body: ByteBuffer(string: "{}"), to: receiver, reused: reused)
        _ = try channel.readOutbound(as: ByteBuffer.self)
        return receiver
    }

    @Test func bytesBehindAnAnswerInTheSameReadKeepTheConnectionFromReuse() throws {
        let (pool, connection, channel) = try connected()
        let receiver = try send(connection, on: channel)
        try channel.writeInbound(
            ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial"))
        #expect(receiver.heads == [200] && receiver.ended == 1)
        #expect(!channel.isActive)
        #expect(pool.takeIdle(now: loop.now) == nil)
    }

    @Test func bytesOnAnIdleConnectionCloseIt() throws {
        let (pool, connection, channel) = try connected()
        let receiver = try send(connection, on: channel)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"))
        #expect(receiver.ended == 1 && channel.isActive)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-len"))
        #expect(!channel.isActive, "a connection that sent unasked bytes stays in the pool")
        #expect(pool.takeIdle(now: loop.now) == nil)
    }

    @Test func aFloodOfInformationalHeadsFailsTheRequest() throws {
        let (_, connection, channel) = try connected()
        let receiver = try send(connection, on: channel, reused: true)
        let flood = String(repeating: "HTTP/1.1 100 Continue\r\n\r\n", count: 5000)
        _ = try? channel.writeInbound(ByteBuffer(string: flood))
        #expect(!channel.isActive)
        #expect(receiver.heads.isEmpty)
        guard case .failed = receiver.failures.first else {
            Issue.record("expected a failure (not a stale-connection retry), got \(receiver.failures)")
            return
        }
    }

    @Test func informationalHeadsDoNotExtendTheDeadlineForTheHead() throws {
        let (_, connection, channel) = try connected(timeout: 2)
        let receiver = try send(connection, on: channel)
        for _ in 0..<3 {
            loop.advanceTime(by: .milliseconds(500))
            try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 102 Processing\r\n\r\n"))
        }
        loop.advanceTime(by: .milliseconds(400))  // 1.9 s after the request
        #expect(receiver.failures.isEmpty)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 2"))  // a trickle of the head
        loop.advanceTime(by: .milliseconds(200))  // 2.1 s
        #expect(receiver.failures == [.timeout])
    }

    @Test func afterTheHeadTheTimeoutCountsFromTheLastRead() throws {
        let (_, connection, channel) = try connected(timeout: 2)
        let receiver = try send(connection, on: channel)
        loop.advanceTime(by: .milliseconds(1500))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n{"))
        loop.advanceTime(by: .milliseconds(1500))  // 3 s after the request, 1.5 s after the last read
        #expect(receiver.failures.isEmpty && receiver.heads == [200])
        loop.advanceTime(by: .milliseconds(600))
        #expect(receiver.failures == [.timeout])
    }

    @Test(arguments: [EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL])
    func thisHostsOwnLimitsAreNotTheUpstreamsFault(errno: Int32) {
        let failure = UpstreamPool.failure(connecting: IOError(errnoCode: errno, reason: "socket"))
        guard case .localResources = failure else {
            Issue.record("errno \(errno) counted against the upstream: \(failure)")
            return
        }
    }

    @Test func aRefusedConnectionIsTheUpstreamsFault() {
        #expect(UpstreamPool.failure(connecting: IOError(errnoCode: ECONNREFUSED, reason: "connect")) == .unreachable("connection refused"))
    }
}
