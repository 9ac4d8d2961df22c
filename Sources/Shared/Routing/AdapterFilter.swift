/// A set of LoRA adapter names in 128 bits (a Bloom filter with three probes), so that the
/// adapters an upstream runs fit in two words of the shared segment. It never misses a
/// name put in; it may claim one that is not (about 1 in 200 with 8 names, vLLM's usual
/// `max_loras` or fewer), which routing treats as a preference, never as a promise.
public struct AdapterFilter: Sendable, Equatable {
    public var low: UInt64
    public var high: UInt64

    public init(low: UInt64 = 0, high: UInt64 = 0) {
        self.low = low
        self.high = high
    }

    public init(_ names: some Sequence<String>) {
        self.init()
        for name in names { insert(name) }
    }

    public mutating func insert(_ name: String) {
        let mask = Self.mask(of: name)
        low |= mask.low
        high |= mask.high
    }

    public func mayContain(_ name: String) -> Bool {
        let mask = Self.mask(of: name)
        return low & mask.low == mask.low && high & mask.high == mask.high
    }

    /// The name's three bits (from one 64-bit hash of it).
    static func mask(of name: String) -> AdapterFilter {
        let hash = PromptBlocks.key(of: Array(name.utf8))
        var mask = AdapterFilter()
        for bit in [hash & 127, (hash >> 7) & 127, (hash >> 14) & 127] {
            if bit < 64 { mask.low |= 1 << bit } else { mask.high |= 1 << (bit - 64) }
        }
        return mask
    }
}
