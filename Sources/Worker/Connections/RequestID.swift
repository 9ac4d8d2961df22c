import Atomics

/// Request ids: the client's `x-request-id` when it is short and plain, else a new one.
enum RequestID {
    /// Random per process, so ids of different workers do not collide; a counter after it,
    /// so making an id costs no syscall.
    static let prefix: String = {
        let hex = String(UInt32.random(in: .min ... .max), radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }()
    static let counter = ManagedAtomic<UInt64>(0)

    /// - Parameter given: the request's first `x-request-id` field, if any.
    static func make(given: String?) -> String {
        if let given, (1...64).contains(given.utf8.count),
            given.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || $0 == 0x5F })
        {
            return given
        }
        let n = counter.loadThenWrappingIncrement(ordering: .relaxed)
        // "req_" + prefix + at least 8 hex digits, written in place.
        let digits = max(8, (UInt64.bitWidth - n.leadingZeroBitCount + 3) / 4)
        return String(unsafeUninitializedCapacity: 12 + digits) { out in
            var i = 0
            for byte in "req_".utf8 { out[i] = byte; i += 1 }
            for byte in prefix.utf8 { out[i] = byte; i += 1 }
            for position in (0..<digits).reversed() {
                let digit = UInt8(truncatingIfNeeded: n >> (4 * UInt64(position))) & 0xF
                out[i] = digit < 10 ? 0x30 + digit : 0x57 + digit
                i += 1
            }
            return i
        }
    }
}
