import NIOCore
import NIOPosix
import ServiceLifecycle
import Shared

/// Writes the current time into the worker's slot from every event loop, four times a
/// second. A loop that stalls stops writing, and the supervisor kills the worker.
struct Heartbeat: Service {
    let group: MultiThreadedEventLoopGroup
    let slot: WorkerSlot

    func run() async throws {
        let tasks = group.makeIterator().map { loop in
            loop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(250)) { [slot] _ in
                slot.heartbeat = .now()
            }
        }
        // The service group stops services in reverse order: the HTTP server drains first,
        // and this one keeps beating until then (a draining worker is still alive).
        try? await gracefulShutdown()
        for task in tasks { task.cancel() }
    }
}
