/// A configuration value that cannot be used, with the key that carried it.
///
/// The supervisor prints ``description`` as the single line an operator sees before it
/// exits with status 2; it never includes the rejected value of a secret.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The key as the operator wrote it: `--workers`, `WORKERS`, `.env:WORKERS`,
    /// `config.yaml: models.qwen.upstreams`.
    public var key: String
    /// Why the value was refused.
    public var reason: String

    public init(key: String, reason: String) {
        self.key = key
        self.reason = reason
    }

    public var description: String { "invalid configuration: \(key): \(reason)" }
}
