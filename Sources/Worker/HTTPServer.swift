import Atomics
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Shared

/// The worker's HTTP/1.1 server on the inherited listening socket.
///
/// Graceful shutdown (SIGTERM from the supervisor): stop accepting at once, close idle
/// keep-alive connections, let in-flight requests and streams finish with
/// `Connection: close` (see ``ConnectionRegistry``), then return when the last connection
/// closed.
struct HTTPServer: Service {
    let listenerFD: Int32
    let group: MultiThreadedEventLoopGroup
    let slot: WorkerSlot
    let handler: RequestHandler
    let maxBodyBytes: Int
    let timeouts: ConnectionTimeoutHandler.Timeouts
    let maxConnections: Int
    let logger: Logger

    func run() async throws {
        let registry = handler.connections
        let server = try await ServerBootstrap(group: group)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(NIOBSDSocket.Handle(listenerFD)) { [timeouts, metrics = handler.metrics] channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: false)
                    try pipeline.addHandler(HTTPProtocolErrorHandler(metrics: metrics))
                    try pipeline.addHandler(ConnectionTimeoutHandler(timeouts: timeouts))
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: channel)
                }
            }
        slot.state = .ready
        logger.info("worker accepting")

        try await withGracefulShutdownHandler {
            try await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        if registry.count >= maxConnections {
                            // Over the cap: refuse at once rather than hold the client.
                            logger.debug("connection refused: \(maxConnections) connections open")
                            connection.channel.close(promise: nil)
                            continue
                        }
                        group.addTask {
                            await HTTPConnection(
                                channel: connection, handler: handler, registry: registry,
                                maxBodyBytes: maxBodyBytes, logger: logger
                            ).run()
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            slot.state = .draining
            logger.info("worker draining")
            registry.beginDrain()
            // Stop accepting first, and close only once an accept already under way has
            // delivered its connection into the stream: a connection yielded into a
            // finished stream would be dropped unserved (and NIO traps on the dropped
            // writer). Until the close, the other workers take new connections.
            let channel = server.channel
            channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in
                channel.eventLoop.scheduleTask(in: .milliseconds(100)) { channel.close(promise: nil) }
            }
        }
        logger.info("worker drained")
    }
}
