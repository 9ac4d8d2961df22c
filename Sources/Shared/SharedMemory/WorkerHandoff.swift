/// What the supervisor hands each worker, by convention on both sides.
public enum WorkerHandoff {
    /// The shared listening socket.
    public static let listenerFD: Int32 = 3
    /// The shared-memory segment.
    public static let segmentFD: Int32 = 4
    /// A sealed memfd holding the resolved configuration as JSON (read with `pread`).
    public static let configurationFD: Int32 = 5
    /// File name of the worker executable, found next to the supervisor's.
    public static let workerExecutableName = "llm-gateway-worker"
    /// Environment variables the supervisor never passes to a worker.
    public static let strippedEnvironment: Set<String> = [
        "BEARER_TOKEN", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
    ]
}
