/// Makes tool-call ids: `call_` followed by 24 random ASCII letters and digits.
///
/// A value type: copies continue independently from the same state, so a seeded generator
/// handed to a parser yields the same ids for every parse (which tests rely on).
public struct ToolCallIDGenerator: Sendable {
    private enum Source: Sendable {
        case system
        case seeded(SplitMix64)
        case custom(@Sendable (_ ordinal: Int) -> String)
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
    private static let randomLength = 24

    private var source: Source
    private var ordinal = 0

    private init(source: Source) {
        self.source = source
    }

    /// Ids from the system's cryptographically secure random source.
    public static var random: ToolCallIDGenerator { ToolCallIDGenerator(source: .system) }

    /// Reproducible ids from a seed, in the production format.
    public static func seeded(_ seed: UInt64) -> ToolCallIDGenerator {
        ToolCallIDGenerator(source: .seeded(SplitMix64(seed: seed)))
    }

    /// Ids made by `make`, which receives 0 for the first id, 1 for the next, and so on.
    public init(_ make: @escaping @Sendable (_ ordinal: Int) -> String) {
        self.source = .custom(make)
    }

    /// Returns the next id.
    public mutating func next() -> String {
        defer { ordinal += 1 }
        switch source {
        case .system:
            var generator = SystemRandomNumberGenerator()
            return Self.makeID(using: &generator)
        case .seeded(var generator):
            let id = Self.makeID(using: &generator)
            source = .seeded(generator)
            return id
        case .custom(let make):
            return make(ordinal)
        }
    }

    private static func makeID(using generator: inout some RandomNumberGenerator) -> String {
        var bytes = Array("call_".utf8)
        for _ in 0..<randomLength {
            bytes.append(alphabet[Int.random(in: 0..<alphabet.count, using: &generator)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
