import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// The worker's HTTP/1.1 server on the inherited listening socket: the ``Acceptor`` takes
/// this worker's share of the connections, each becomes a NIO channel with one
/// ``GatewayConnection`` (its own HTTP/1.1 parser); no task per connection or request.
///
/// Graceful shutdown (SIGTERM from the supervisor): stop accepting at once, close idle
/// keep-alive connections, let in-flight requests and streams finish with
/// `Connection: close` (see ``ConnectionRegistry``), then return when the last connection
/// closed. At ``drainTimeout`` what is still open is ended (streams with an error event and
/// `[DONE]`) and closed, so a worker always leaves: also one whose supervisor died (its
/// parent-death signal is SIGTERM) with a hung upstream. Cancellation (SIGQUIT) closes
/// everything at once.
struct HTTPServer: Service {
    let listenerFD: Int32
    let group: MultiThreadedEventLoopGroup
    let slot: WorkerSlot
    let handler: RequestHandler
    let maxBodyBytes: Int
    let timeouts: ClientConnectionStateMachine.Timeouts
    let maxConnections: Int
    /// `DRAIN_TIMEOUT`: how long a drain waits for open responses.
    let drainTimeout: TimeAmount
    let logger: Logger

    func run() async throws {
        let registry = handler.connections
        let eventLoop = group.next()
        let bootstrap = ClientBootstrap(group: eventLoop)
            .channelInitializer { [handler, timeouts, maxBodyBytes] channel in
                channel.eventLoop.makeCompletedFuture {
                    try GatewayConnection.configure(
                        channel, handler: handler, registry: registry, maxBodyBytes: maxBodyBytes, timeouts: timeouts)
                }
            }
        // The acceptor calls back on this loop.
        let connections = NIOLoopBound(bootstrap, eventLoop: eventLoop)
        let balance = AcceptBalance(segment: handler.segment, slot: slot.index)
        let acceptor = try Acceptor(listenerFD: listenerFD, eventLoop: eventLoop, balance: balance, logger: logger) { [maxConnections, logger] fd in
            if registry.count >= maxConnections {
                // Over the cap: refuse at once rather than hold the client.
                logger.debug("connection refused: \(maxConnections) connections open")
                close(fd)
                return
            }
            // The channel owns the descriptor from here.
            connections.value.withConnectedSocket(fd).whenFailure { error in
                logger.debug("connection not set up: \(error)")
            }
        }
        acceptor.start()
        slot.state = .ready
        logger.info("worker accepting")

        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await acceptor.stopped.get()
                // Accepting stopped (drain): wait for the open connections to finish.
                while registry.count > 0 {
                    try await Task.sleep(for: .milliseconds(20))
                }
            } onGracefulShutdown: {
                slot.state = .draining
                logger.info("worker draining")
                registry.beginDrain()
                // The other workers take new connections from now on.
                acceptor.stop()
                eventLoop.scheduleTask(in: drainTimeout) {
                    if registry.count > 0 {
                        logger.warning("drain timeout: ending \(registry.count) open connection(s)")
                        registry.drainDeadlineReached()
                    }
                }
            }
        } onCancel: {
            acceptor.stop()
            registry.closeAll()
        }
        logger.info("worker drained")
    }
}
