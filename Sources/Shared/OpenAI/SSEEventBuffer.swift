/// Splits an SSE byte stream into whole events, however the network cut it: the one place
/// that says where an event ends. Holds back only the bytes of the event not yet complete.
///
/// As the SSE specification reads: a line ends at CR LF, LF or CR, and an event ends at an
/// empty line — so at `\n\n`, `\r\n\r\n` or `\r\r`, and at their mixtures (`\n\r\n`).
/// Each event is returned with its terminator, byte for byte as it came. A CR that is the
/// last byte so far is decided when the next byte comes (an LF after it is part of the same
/// line end), so an event ended by a lone CR at the end of a read waits for the next read
/// or ``finish()``; vLLM ends its events with LF.
///
/// An event longer than ``maxEventBytes`` is not held: the buffer drops what it held and
/// reports ``overflowed``, and the caller ends the stream (an upstream that never ends an
/// event must not grow a worker without bound).
public struct SSEEventBuffer: Sendable {
    private var pending: [UInt8] = []
    /// Bytes of `pending` already looked at.
    private var scanned = 0
    /// The line being read has bytes (so a line end after it is not an empty line).
    private var lineHasContent = false
    /// The longest event held back.
    public let maxEventBytes: Int
    /// An incomplete event outgrew ``maxEventBytes`` (its bytes were dropped).
    public private(set) var overflowed = false

    public init(maxEventBytes: Int = 16 << 20) {
        self.maxEventBytes = maxEventBytes
    }

    /// Bytes held back (an incomplete event).
    public var pendingCount: Int { pending.count }

    /// Adds `bytes`; returns every event completed by them, each with its terminating
    /// empty line.
    public mutating func append(_ bytes: some Collection<UInt8>) -> [[UInt8]] {
        pending.append(contentsOf: bytes)
        var events: [[UInt8]] = []
        var start = 0
        var i = scanned
        while i < pending.count {
            let byte = pending[i]
            guard byte == 0x0A || byte == 0x0D else {
                lineHasContent = true
                i += 1
                continue
            }
            var lineEnd = i
            if byte == 0x0D {
                guard i + 1 < pending.count else { break }  // CR LF or a lone CR: the next byte says
                if pending[i + 1] == 0x0A { lineEnd = i + 1 }
            }
            if !lineHasContent {
                events.append(Array(pending[start...lineEnd]))
                start = lineEnd + 1
            }
            lineHasContent = false
            i = lineEnd + 1
        }
        if start > 0 { pending.removeFirst(start) }
        scanned = i - start
        if pending.count > maxEventBytes {
            overflowed = true
            pending = []
            scanned = 0
        }
        return events
    }

    /// Whatever is left when the stream ends (an unterminated last event), emptied.
    public mutating func finish() -> [UInt8] {
        defer {
            pending.removeAll()
            scanned = 0
            lineHasContent = false
        }
        return pending
    }

    /// The `data:` payload of an event (its `data:` lines joined by "\n"), or nil when it has
    /// none. Lines end at CR LF, LF or CR, as in ``append(_:)``.
    public static func data(of event: [UInt8]) -> [UInt8]? {
        var result: [UInt8]?
        var lineStart = 0
        var i = 0
        while i <= event.count {
            if i == event.count || event[i] == 0x0A || event[i] == 0x0D {
                let line = event[lineStart..<i]
                if line.starts(with: Self.dataField) {
                    var payload = line.dropFirst(5)
                    if payload.first == 0x20 { payload = payload.dropFirst() }
                    if result == nil { result = Array(payload) } else { result! += [0x0A] + payload }
                }
                if i + 1 < event.count, event[i] == 0x0D, event[i + 1] == 0x0A { i += 1 }
                lineStart = i + 1
            }
            i += 1
        }
        return result
    }

    /// The lines of an event other than its `data:` lines (`event:`, `id:`, `retry:`,
    /// comments), each ended by LF: what a relay that rewrites the data keeps.
    public static func otherLines(of event: [UInt8]) -> [UInt8] {
        var result: [UInt8] = []
        var lineStart = 0
        var i = 0
        while i <= event.count {
            if i == event.count || event[i] == 0x0A || event[i] == 0x0D {
                let line = event[lineStart..<i]
                if !line.isEmpty && !line.starts(with: Self.dataField) { result += line + [0x0A] }
                if i + 1 < event.count, event[i] == 0x0D, event[i + 1] == 0x0A { i += 1 }
                lineStart = i + 1
            }
            i += 1
        }
        return result
    }

    private static let dataField = Array("data:".utf8)
}
