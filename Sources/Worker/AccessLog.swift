import NIOCore
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// What a request's access line says besides method, route, status and timing.
struct AccessFields {
    var key: String?
    var model: String?
    var upstream: String?
    var error: String?
    var promptTokens: Int?
    var completionTokens: Int?
}

/// The worker's access log: one JSON line per request, in the same shape as every other
/// log line (``GatewayLogHandler``), written to standard error.
///
/// Built for the request path: the line is formatted straight into a byte buffer (no
/// metadata dictionary, no sorting, no secret-key scan — every field is the gateway's own
/// and none is a secret), and the lines of one event-loop tick leave in one `write(2)`
/// at the end of the tick. Under load that is one syscall for many requests; when idle, a
/// line is written as soon as its request ends. Lines never interleave with other
/// processes' lines (each write holds whole lines, at most ``flushBytes`` of them).
///
/// `@unchecked Sendable`: used only on the worker's event loop.
final class AccessLog: @unchecked Sendable {
    private let eventLoop: any EventLoop
    private let fd: Int32
    private let pid: String
    private var buffer: [UInt8] = []
    private var flushScheduled = false
    /// `"2026-11-21T12:00:00` for the current second (the prefix of every timestamp).
    private var secondPrefix: [UInt8] = []
    private var second: Int = -1

    /// A write holds at most this much (PIPE_BUF-sized writes are not needed: a line is
    /// never split, and a journald/docker stream reader takes whole lines).
    static let flushBytes = 64 << 10

    init(eventLoop: any EventLoop, fd: Int32 = 2) {
        self.eventLoop = eventLoop
        self.fd = fd
        self.pid = String(getpid())
        buffer.reserveCapacity(Self.flushBytes)
    }

    func record(
        requestID: String, method: String, route: String, status: Int, seconds: Double, bytes: Int, fields: AccessFields
    ) {
        buffer.append(contentsOf: #"{"ts":""#.utf8)
        appendTimestamp()
        buffer.append(contentsOf: #"","level":"info","proc":"worker","pid":"#.utf8)
        buffer.append(contentsOf: pid.utf8)
        buffer.append(contentsOf: #","msg":"request""#.utf8)
        append("bytes", number: bytes)
        if let tokens = fields.completionTokens { append("completion_tokens", number: tokens) }
        buffer.append(contentsOf: #","duration_ms":"#.utf8)
        buffer.append(contentsOf: String((seconds * 1e6).rounded() / 1e3).utf8)
        if let error = fields.error { append("error", error) }
        if let key = fields.key { append("key", key) }
        append("method", method)
        if let model = fields.model { append("model", model) }
        if let tokens = fields.promptTokens { append("prompt_tokens", number: tokens) }
        append("request_id", requestID)
        append("route", route)
        append("status", number: status)
        if let upstream = fields.upstream { append("upstream", upstream) }
        buffer.append(contentsOf: "}\n".utf8)
        if buffer.count >= Self.flushBytes {
            flush()
        } else if !flushScheduled {
            flushScheduled = true
            eventLoop.assumeIsolated().execute { [self] in
                flushScheduled = false
                flush()
            }
        }
    }

    /// Writes what is buffered.
    func flush() {
        guard !buffer.isEmpty else { return }
        buffer.withUnsafeBytes { GatewayLogHandler.writeAll($0, to: fd) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func append(_ key: StaticString, _ value: String) {
        appendKey(key)
        JSON.appendQuoted(value, to: &buffer)
    }

    private func append(_ key: StaticString, number: Int) {
        appendKey(key)
        buffer.append(contentsOf: String(number).utf8)
    }

    private func appendKey(_ key: StaticString) {
        buffer.append(UInt8(ascii: ","))
        buffer.append(UInt8(ascii: "\""))
        buffer.append(contentsOf: UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount))
        buffer.append(UInt8(ascii: "\""))
        buffer.append(UInt8(ascii: ":"))
    }

    private func appendTimestamp() {
        var tv = timeval()
        gettimeofday(&tv, nil)
        if tv.tv_sec != second {
            second = tv.tv_sec
            let full = GatewayLogHandler.timestamp(tv)  // "2026-11-21T12:00:00.123Z"
            secondPrefix = Array(full.utf8.prefix(19))
        }
        buffer.append(contentsOf: secondPrefix)
        let millis = Int(tv.tv_usec / 1000)
        buffer.append(UInt8(ascii: "."))
        buffer.append(UInt8(48 + millis / 100))
        buffer.append(UInt8(48 + millis / 10 % 10))
        buffer.append(UInt8(48 + millis % 10))
        buffer.append(UInt8(ascii: "Z"))
    }
}
