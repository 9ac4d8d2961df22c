import NIOCore

/// One RESP2 reply from Redis (or Valkey): the five types of the protocol, with the null
/// bulk string and the null array as `nil` payloads.
///
/// An error reply at the top level fails the command (``RedisError/server(_:)``); inside an
/// array it stays a value here.
public enum RESPValue: Sendable, Hashable {
    /// `+OK`: a short status line.
    case simpleString(String)
    /// `-ERR ...`: the message, its first word the error's kind (`NOSCRIPT`, `WRONGPASS`).
    case error(String)
    /// `:42`.
    case integer(Int64)
    /// `$3\r\nfoo`, binary-safe; `nil` for the null bulk string (`$-1`).
    case bulkString(ByteBuffer?)
    /// `*2\r\n...`, elements in order; `nil` for the null array (`*-1`).
    case array([RESPValue]?)

    /// The text of a simple string or a bulk string (UTF-8 decoded); nil for other types and null.
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes?): String(buffer: bytes)
        default: nil
        }
    }

    /// The value of an integer reply, or of a bulk string that holds a decimal integer.
    public var integer: Int64? {
        switch self {
        case .integer(let value): value
        case .bulkString(let bytes?): Int64(String(buffer: bytes))
        default: nil
        }
    }

    /// The elements of a non-null array.
    public var array: [RESPValue]? {
        if case .array(let elements?) = self { return elements }
        return nil
    }

    /// True for the null bulk string and the null array.
    public var isNull: Bool {
        switch self {
        case .bulkString(nil), .array(nil): true
        default: false
        }
    }
}
