import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Shared

/// The worker's HTTP/1.1 server on the inherited listening socket: each accepted
/// connection gets NIO's HTTP request decoder and a ``GatewayConnection``; no task per
/// connection or request.
///
/// Graceful shutdown (SIGTERM from the supervisor): stop accepting at once, close idle
/// keep-alive connections, let in-flight requests and streams finish with
/// `Connection: close` (see ``ConnectionRegistry``), then return when the last connection
/// closed. Cancellation (SIGQUIT) closes everything at once.
struct HTTPServer: Service {
    let listenerFD: Int32
    let group: MultiThreadedEventLoopGroup
    let slot: WorkerSlot
    let handler: RequestHandler
    let maxBodyBytes: Int
    let timeouts: ConnectionTimer.Timeouts
    let maxConnections: Int
    let logger: Logger

    func run() async throws {
        let registry = handler.connections
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [handler, timeouts, maxBodyBytes, maxConnections, logger] channel in
                if registry.count >= maxConnections {
                    // Over the cap: refuse at once rather than hold the client.
                    logger.debug("connection refused: \(maxConnections) connections open")
                    channel.close(promise: nil)
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                return channel.eventLoop.makeCompletedFuture {
                    try GatewayConnection.configure(
                        channel, handler: handler, registry: registry, maxBodyBytes: maxBodyBytes, timeouts: timeouts)
                }
            }
            .withBoundSocket(NIOBSDSocket.Handle(listenerFD))
            .get()
        slot.state = .ready
        logger.info("worker accepting")

        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await server.closeFuture.get()
                // Accepting stopped (drain): wait for the open connections to finish.
                while registry.count > 0 {
                    try await Task.sleep(for: .milliseconds(20))
                }
            } onGracefulShutdown: {
                slot.state = .draining
                logger.info("worker draining")
                registry.beginDrain()
                // The other workers take new connections from now on.
                server.close(promise: nil)
            }
        } onCancel: {
            server.close(promise: nil)
            registry.closeAll()
        }
        logger.info("worker drained")
    }
}
