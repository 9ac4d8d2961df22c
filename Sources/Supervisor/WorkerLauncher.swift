import CGatewayShims
import Foundation
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// Starts worker processes with `posix_spawn` (never `fork` of this process) and hands
/// them the listening socket, the shared segment and the configuration by inheritance.
struct WorkerLauncher {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let executablePath: String
    let listenerFD: Int32
    let segmentFD: Int32

    /// The worker executable next to the running supervisor.
    static func locateWorker() throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { throw Failure(description: "cannot read /proc/self/exe: \(errnoText())") }
        let own = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let directory = own.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let path = "\(directory)/\(WorkerHandoff.workerExecutableName)"
        guard access(path, X_OK) == 0 else {
            throw Failure(description: "worker executable \(path) is missing or not executable (install it next to llm-gateway)")
        }
        return path
    }

    /// Writes `configuration` into a sealed memfd the workers of one generation share.
    static func configurationFile(_ configuration: GatewayConfiguration) throws -> Int32 {
        let data = try JSONEncoder().encode(configuration)
        let fd = gw_memfd_create("llm-gateway-config")
        guard fd >= 0 else { throw Failure(description: "memfd_create: \(errnoText())") }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count else {
            close(fd)
            throw Failure(description: "writing the configuration: \(errnoText())")
        }
        _ = gw_seal_memfd(fd)
        return fd
    }

    /// Spawns one worker for `slot`; returns its pid.
    func spawn(slot: Int, generation: UInt64, configurationFD: Int32, supervisorPID: Int32) throws -> Int32 {
        let arguments = [
            executablePath, "--slot", String(slot), "--generation", String(generation), "--supervisor-pid", String(supervisorPID),
        ]
        let environment = ProcessInfo.processInfo.environment
            .filter { !WorkerHandoff.strippedEnvironment.contains($0.key) }
            .map { "\($0.key)=\($0.value)" }
        let from = [listenerFD, segmentFD, configurationFD]
        let to = [WorkerHandoff.listenerFD, WorkerHandoff.segmentFD, WorkerHandoff.configurationFD]
        var pid: pid_t = 0
        let rc = withCStrings(arguments) { argv in
            withCStrings(environment) { envp in
                gw_spawn(&pid, executablePath, argv, envp, from, to, Int32(from.count), WorkerHandoff.configurationFD + 1)
            }
        }
        guard rc == 0 else { throw Failure(description: "posix_spawn \(executablePath): \(errnoText(rc))") }
        return pid
    }
}

/// Calls `body` with a NULL-terminated `char *[]` of `strings`.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
