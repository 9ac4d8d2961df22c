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
    private let pid: [UInt8]
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
        self.pid = Array(String(getpid()).utf8)
        buffer.reserveCapacity(Self.flushBytes)
    }

    func record(
        requestID: String, method: String, route: String, status: Int, seconds: Double, bytes: Int, fields: AccessFields
    ) {
        // Appends go to a local array (moved out of the property and back): appending to a
        // class's stored array would pay a dynamic exclusivity check per call.
        var out: [UInt8] = []
        swap(&out, &buffer)
        out.append(contentsOf: #"{"ts":""#.utf8)
        appendTimestamp(to: &out)
        out.append(contentsOf: #"","level":"info","proc":"worker","pid":"#.utf8)
        out.append(contentsOf: pid)
        out.append(contentsOf: #","msg":"request""#.utf8)
        Self.append("bytes", number: bytes, to: &out)
        if let tokens = fields.completionTokens { Self.append("completion_tokens", number: tokens, to: &out) }
        out.append(contentsOf: #","duration_ms":"#.utf8)
        DecimalText.appendThousandths(Int((seconds * 1e6).rounded()), to: &out)  // milliseconds
        if let error = fields.error { Self.append("error", error, to: &out) }
        if let key = fields.key { Self.append("key", key, to: &out) }
        Self.append("method", method, to: &out)
        if let model = fields.model { Self.append("model", model, to: &out) }
        if let tokens = fields.promptTokens { Self.append("prompt_tokens", number: tokens, to: &out) }
        Self.append("request_id", requestID, to: &out)
        Self.append("route", route, to: &out)
        Self.append("status", number: status, to: &out)
        if let upstream = fields.upstream { Self.append("upstream", upstream, to: &out) }
        out.append(contentsOf: "}\n".utf8)
        swap(&out, &buffer)
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

    private static func append(_ key: StaticString, _ value: String, to out: inout [UInt8]) {
        appendKey(key, to: &out)
        JSON.appendQuoted(value, to: &out)
    }

    private static func append(_ key: StaticString, number: Int, to out: inout [UInt8]) {
        appendKey(key, to: &out)
        DecimalText.append(number, to: &out)
    }

    private static func appendKey(_ key: StaticString, to out: inout [UInt8]) {
        out.append(UInt8(ascii: ","))
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount))
        out.append(UInt8(ascii: "\""))
        out.append(UInt8(ascii: ":"))
    }

    private func appendTimestamp(to out: inout [UInt8]) {
        var tv = timeval()
        gettimeofday(&tv, nil)
        if tv.tv_sec != second {
            second = tv.tv_sec
            let full = GatewayLogHandler.timestamp(tv)  // "2026-11-21T12:00:00.123Z"
            secondPrefix = Array(full.utf8.prefix(19))
        }
        out.append(contentsOf: secondPrefix)
        let millis = Int(tv.tv_usec / 1000)
        out.append(UInt8(ascii: "."))
        out.append(UInt8(48 + millis / 100))
        out.append(UInt8(48 + millis / 10 % 10))
        out.append(UInt8(48 + millis % 10))
        out.append(UInt8(ascii: "Z"))
    }
}
