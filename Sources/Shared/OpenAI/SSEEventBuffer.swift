/// Splits an SSE byte stream into whole events (terminated by a blank line), however the
/// network cut it. Holds back only the bytes of the event not yet complete.
///
/// An event longer than ``maxEventBytes`` is not held: the buffer drops what it held and
/// reports ``overflowed``, and the caller ends the stream (an upstream that never ends an
/// event must not grow a worker without bound).
public struct SSEEventBuffer: Sendable {
    private var pending: [UInt8] = []
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
    /// blank line.
    public mutating func append(_ bytes: some Collection<UInt8>) -> [[UInt8]] {
        let searchFrom = max(0, pending.count - 3)
        pending.append(contentsOf: bytes)
        var events: [[UInt8]] = []
        var start = 0
        var i = searchFrom
        while i < pending.count {
            // An event ends at "\n\n", "\r\n\r\n" or "\r\r".
            if pending[i] == 0x0A, i + 1 < pending.count, pending[i + 1] == 0x0A {
                events.append(Array(pending[start...(i + 1)]))
                start = i + 2
                i = start
                continue
            }
            if pending[i] == 0x0D, i + 3 < pending.count, pending[i + 1] == 0x0A, pending[i + 2] == 0x0D, pending[i + 3] == 0x0A {
                events.append(Array(pending[start...(i + 3)]))
                start = i + 4
                i = start
                continue
            }
            i += 1
        }
        if start > 0 { pending.removeFirst(start) }
        if pending.count > maxEventBytes {
            overflowed = true
            pending = []
        }
        return events
    }

    /// Whatever is left when the stream ends (an unterminated last event), emptied.
    public mutating func finish() -> [UInt8] {
        defer { pending.removeAll() }
        return pending
    }

    /// The `data:` payload of an event (lines joined by "\n"), or nil when it has none.
    public static func data(of event: [UInt8]) -> [UInt8]? {
        var result: [UInt8]?
        var lineStart = 0
        var i = 0
        while i <= event.count {
            if i == event.count || event[i] == 0x0A {
                var line = event[lineStart..<i]
                if line.last == 0x0D { line = line.dropLast() }
                if line.starts(with: Array("data:".utf8)) {
                    var payload = line.dropFirst(5)
                    if payload.first == 0x20 { payload = payload.dropFirst() }
                    if result == nil { result = Array(payload) } else { result! += [0x0A] + payload }
                }
                lineStart = i + 1
            }
            i += 1
        }
        return result
    }
}
