/// The Redis keys of one client key's buckets: `{<key id>}:req` and `{<key id>}:tok`, the
/// key id (from the key's SHA-256 digest, never the key) in 16 hex digits between braces,
/// so both buckets of a key share one hash slot (one script may touch both on Redis
/// Cluster).
public enum RedisLimitKeys {
    /// The request bucket of `keyID`.
    public static func requests(_ keyID: UInt64) -> String { "{\(hex(keyID))}:req" }
    /// The token bucket of `keyID`.
    public static func tokens(_ keyID: UInt64) -> String { "{\(hex(keyID))}:tok" }

    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
