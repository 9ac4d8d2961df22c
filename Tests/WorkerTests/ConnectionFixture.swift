import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1

@testable import Shared
@testable import Worker

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// A client connection's real pipeline (NIO's request decoder and ``GatewayConnection``)
/// on an `EmbeddedChannel`, answering with the demo upstream: bytes in, bytes out, time
/// moved by hand.
struct ConnectionFixture {
    let channel: EmbeddedChannel
    let segment: SharedSegment
    let handler: RequestHandler

    init(
        environment: [String: String] = [:], maxBodyBytes: Int = 1024,
        timeouts: ClientConnectionStateMachine.Timeouts = .init(head: .seconds(10), body: .seconds(60), idle: .seconds(30)),
        accessLogFD: Int32? = nil
    ) throws {
        let sources = ConfigurationSources(
            flags: ["upstream": "demo"], environment: environment, dotEnv: [:], cpuCount: 1, readFile: { _ in "" })
        let configuration = try GatewayConfiguration.load(from: sources)
        segment = try SharedSegment.create(supervisorPID: 1)
        channel = EmbeddedChannel()
        let upstreams = try UpstreamPools(configuration: configuration, eventLoop: channel.eventLoop, environment: [:])
        handler = RequestHandler(
            configuration: configuration, segment: segment, slot: segment.workerSlot(0), upstreams: upstreams,
            logger: Logger(label: "test"), accessLogFD: accessLogFD ?? open("/dev/null", O_WRONLY))
        try GatewayConnection.configure(
            channel, handler: handler, registry: handler.connections, maxBodyBytes: maxBodyBytes, timeouts: timeouts)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    /// Everything written to the client since the last call.
    func written() throws -> String {
        var text = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            text += buffer.readString(length: buffer.readableBytes) ?? ""
        }
        return text
    }

    /// A `stream: true` chat completion for the demo model.
    static let streamBody = #"{"model":"demo","stream":true,"messages":[{"role":"user","content":"hi"}]}"#

    /// A whole `POST` request with `body` and its `content-length`.
    static func post(_ path: String, _ body: String, version: String = "HTTP/1.1", headers: String = "Host: x\r\n") -> String {
        "POST \(path) \(version)\r\n\(headers)Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    /// The status codes of the responses in `text`, in order.
    static func statuses(_ text: String) -> [Int] {
        text.components(separatedBy: "HTTP/1.1 ").dropFirst().compactMap { Int($0.prefix(3)) }
    }
}
