/// Why a Redis URL was refused, in words that never repeat the URL (it may hold a password).
public struct RedisURLError: Error, Hashable, CustomStringConvertible, Sendable {
    /// What is wrong: "port must be a number from 1 to 65535".
    public var reason: String

    /// An error saying `reason`.
    public init(reason: String) { self.reason = reason }

    /// "invalid Redis URL: " and the reason.
    public var description: String { "invalid Redis URL: \(reason)" }
}
