import Logging

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// A swift-log handler writing one JSON object per line to standard error, which journald
/// (or `docker logs`) collects. Each line is a single `write(2)`, so lines of several
/// processes sharing the stream never interleave.
///
/// Metadata whose key looks like a secret (`authorization`, `token`, `api_key`, `secret`,
/// `password`, `cookie`, ...) is replaced by `"[redacted]"` whatever the log level.
public struct GatewayLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let process: String
    let fd: Int32

    /// - Parameters:
    ///   - process: `supervisor` or `worker`, written in every line.
    ///   - fd: where lines go (standard error by default).
    public init(label: String, process: String, level: Logger.Level, fd: Int32 = 2) {
        self.label = label
        self.process = process
        self.logLevel = level
        self.fd = fd
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Installs this handler for the whole process.
    public static func bootstrap(process: String, level: Logger.Level) {
        LoggingSystem.bootstrap { label in GatewayLogHandler(label: label, process: process, level: level) }
    }

    static let secretMarkers = ["authorization", "bearer", "token", "secret", "password", "passwd", "api_key", "apikey", "api-key", "cookie", "credential"]

    /// Keys the gateway itself logs that are known not to be secrets (the token counts
    /// look like secrets by name). Checked first: the access line is on the hot path.
    static let notSecrets: Set<String> = [
        "request_id", "method", "route", "status", "duration_ms", "bytes", "model", "upstream", "key", "error",
        "prompt_tokens", "completion_tokens", "total_tokens", "slot", "address", "workers", "uid", "models",
    ]
    static let secretMarkerBytes = secretMarkers.map { Array($0.utf8) }

    /// True when a metadata key names something that must never be logged.
    public static func isSecretKey(_ key: String) -> Bool {
        if notSecrets.contains(key) { return false }
        let lower = Array(key.lowercased().utf8)
        return secretMarkerBytes.contains { marker in
            guard lower.count >= marker.count else { return false }
            return (0...(lower.count - marker.count)).contains { start in lower[start..<(start + marker.count)].elementsEqual(marker) }
        }
    }

    public func log(event: LogEvent) {
        var line = "{\"ts\":\""
        line += Self.timestamp()
        line += "\",\"level\":\""
        line += event.level.rawValue
        line += "\",\"proc\":\""
        line += process
        line += "\",\"pid\":"
        line += String(getpid())
        line += ",\"msg\":"
        JSON.appendQuoted(event.message.description, to: &line)
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += ","
            JSON.appendQuoted(key, to: &line)
            line += ":"
            if Self.isSecretKey(key) {
                line += "\"[redacted]\""
            } else {
                Self.append(value, to: &line)
            }
        }
        line += "}\n"
        Array(line.utf8).withUnsafeBytes { Self.writeAll($0, to: fd) }
    }

    /// Writes all of `bytes` to `fd` (retrying short writes and EINTR; gives up on errors:
    /// a log line is never worth blocking or crashing for).
    public static func writeAll(_ bytes: UnsafeRawBufferPointer, to fd: Int32) {
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }

    static func append(_ value: Logger.MetadataValue, to line: inout String) {
        switch value {
        case .string(let s): JSON.appendQuoted(s, to: &line)
        case .stringConvertible(let c):
            if let n = c as? any BinaryInteger {
                line += "\(n)"
            } else if let d = c as? Double, d.isFinite {
                line += "\(d)"
            } else {
                JSON.appendQuoted(c.description, to: &line)
            }
        case .array(let items):
            line += "["
            for (i, item) in items.enumerated() {
                if i > 0 { line += "," }
                append(item, to: &line)
            }
            line += "]"
        case .dictionary(let dict):
            line += "{"
            for (i, (k, v)) in dict.sorted(by: { $0.key < $1.key }).enumerated() {
                if i > 0 { line += "," }
                JSON.appendQuoted(k, to: &line)
                line += ":"
                if isSecretKey(k) { line += "\"[redacted]\"" } else { append(v, to: &line) }
            }
            line += "}"
        }
    }

    static func timestamp() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        return timestamp(tv)
    }

    /// `tv` as `2026-11-21T12:00:00.123Z`.
    public static func timestamp(_ tv: timeval) -> String {
        var seconds = tv.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ n: Int32, _ width: Int) -> String {
            let s = String(n)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(tv.tv_usec / 1000), 3))Z"
    }
}

extension Logger.Level {
    /// Parses `LOG_LEVEL` values (already validated by the configuration loader).
    public init(configValue: String) {
        self = Logger.Level(rawValue: configValue.lowercased()) ?? .info
    }
}
