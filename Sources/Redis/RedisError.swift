/// Why a Redis command or connection failed. ``kind`` is a fixed word for a metric label;
/// ``description`` never carries a password (no error here is built from the URL's).
public struct RedisError: Error, Hashable, CustomStringConvertible, Sendable {
    private enum Reason: Hashable, Sendable {
        case timeout
        case notConnected
        case connectionClosed
        case server(String)
        case protocolViolation(String)
    }

    private let reason: Reason

    private init(_ reason: Reason) { self.reason = reason }

    /// The command's deadline passed before its reply came (the reply, if it comes, is dropped).
    public static let timeout = RedisError(.timeout)
    /// The client has no connection up (connecting, or waiting to reconnect): failed at once.
    public static let notConnected = RedisError(.notConnected)
    /// The connection closed with the command sent and unanswered.
    public static let connectionClosed = RedisError(.connectionClosed)

    /// Redis answered with an error reply (`-NOSCRIPT ...`, `-WRONGPASS ...`).
    public static func server(_ message: String) -> RedisError { RedisError(.server(message)) }

    /// The bytes from the server are not RESP2, or exceed a limit: the connection is closed.
    public static func protocolViolation(_ why: String) -> RedisError { RedisError(.protocolViolation(why)) }

    /// The error reply's message, for a server error.
    public var serverMessage: String? {
        if case .server(let message) = reason { return message }
        return nil
    }

    /// True for an error reply whose first word is `code` (`NOSCRIPT`).
    public func isServerError(_ code: String) -> Bool {
        guard let message = serverMessage, message.hasPrefix(code) else { return false }
        return message.utf8.count == code.utf8.count || message.dropFirst(code.count).first == " "
    }

    /// `timeout`, `not_connected`, `connection_closed`, `server` or `protocol`: a label value.
    public var kind: String {
        switch reason {
        case .timeout: "timeout"
        case .notConnected: "not_connected"
        case .connectionClosed: "connection_closed"
        case .server: "server"
        case .protocolViolation: "protocol"
        }
    }

    /// One line for a log: never a password, never a key.
    public var description: String {
        switch reason {
        case .timeout: "redis: command deadline passed"
        case .notConnected: "redis: not connected"
        case .connectionClosed: "redis: connection closed"
        case .server(let message): "redis: server error: \(message)"
        case .protocolViolation(let why): "redis: protocol violation: \(why)"
        }
    }
}
