import NIOConcurrencyHelpers
import NIOCore

/// Cancels the task serving a connection's current request the moment the connection
/// closes, so a client that hangs up cancels its upstream request (and vLLM aborts the
/// generation) instead of being noticed only at the next write.
///
/// One per connection, with one `closeFuture` callback: nothing accumulates across the
/// requests of a long keep-alive connection.
final class ClientDisconnect: Sendable {
    private struct State {
        var current: Task<Void, Never>?
        var closed = false
    }

    private let state = NIOLockedValueBox(State())

    init(closeFuture: EventLoopFuture<Void>) {
        closeFuture.whenComplete { [state] _ in
            let task = state.withLockedValue { state -> Task<Void, Never>? in
                state.closed = true
                return state.current
            }
            task?.cancel()
        }
    }

    /// Runs `operation` in a task that the connection's close cancels.
    func run(_ operation: @escaping @Sendable () async -> Void) async {
        let task = Task { await operation() }
        let alreadyClosed = state.withLockedValue { state -> Bool in
            state.current = task
            return state.closed
        }
        if alreadyClosed { task.cancel() }
        await withTaskCancellationHandler {
            await task.value
        } onCancel: {
            task.cancel()
        }
        state.withLockedValue { $0.current = nil }
    }
}
