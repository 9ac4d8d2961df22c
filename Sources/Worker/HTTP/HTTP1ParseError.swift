/// Why a message was refused. After any of them the connection's framing can no longer be
/// trusted: it is answered (a client) or failed (an upstream), then closed.
public enum HTTP1ParseError: Error, Equatable, CustomStringConvertible {
    /// The start line and fields (or a trailer section) exceed the limit: 431 for a client.
    case headTooLarge
    /// A well-formed `HTTP/x.y` other than 1.0 and 1.1: 505 for a client.
    case versionNotSupported
    /// Anything else that is not HTTP/1.x as RFC 9112 frames it: 400 for a client.
    case malformed(String)

    /// The reason as a log line or an error body says it.
    public var description: String {
        switch self {
        case .headTooLarge: "head too large"
        case .versionNotSupported: "HTTP version not supported"
        case .malformed(let why): "malformed HTTP: \(why)"
        }
    }
}
