/// A prompt cut into fixed-size blocks whose hashes chain, the way vLLM's prefix caching
/// names its KV-cache blocks: block `i`'s hash covers its bytes and the hash of block
/// `i - 1`, so two prompts share block `i`'s hash only when they share everything up to
/// its end. A trailing partial block has no hash (vLLM caches whole blocks only).
///
/// The gateway has no tokenizer: blocks are of bytes of the request's prompt as the client
/// sent it (the JSON text of `messages`, or `prompt`). A conversation that grows by turns
/// keeps its earlier turns' bytes, so its blocks keep their hashes. The hash is fixed
/// (no per-process seed): independent gateways cut and hash the same prompt the same way.
public enum PromptBlocks {
    /// Bytes per block: about 64 tokens of English text.
    public static let defaultBlockBytes = 256
    /// Tokens a block stands for, at about 4 bytes a token (the gateway has no tokenizer):
    /// the exchange rate with figures vLLM gives in tokens.
    public static let tokensPerBlock = defaultBlockBytes / 4
    /// Blocks hashed at most (a 1 MiB prompt is not walked to its end: routing needs its
    /// start; 4096 blocks of 256 bytes = 1 MiB).
    public static let defaultMaxBlocks = 4096

    /// The chained hashes of `bytes`' whole blocks, at most `maxBlocks`.
    public static func hashes(of bytes: UnsafeRawBufferPointer, blockBytes: Int = defaultBlockBytes, maxBlocks: Int = defaultMaxBlocks) -> [UInt64] {
        precondition(blockBytes > 0 && blockBytes % 8 == 0, "blocks are whole 8-byte words")
        let count = min(bytes.count / blockBytes, maxBlocks)
        guard count > 0, let base = bytes.baseAddress else { return [] }
        var hashes: [UInt64] = []
        hashes.reserveCapacity(count)
        var previous: UInt64 = 0x9E37_79B9_7F4A_7C15
        for block in 0..<count {
            var hash = previous
            let start = base + block * blockBytes
            for word in 0..<(blockBytes / 8) {
                let value = UInt64(littleEndian: start.loadUnaligned(fromByteOffset: word * 8, as: UInt64.self))
                hash = (hash ^ value) &* 0x0000_0100_0000_01B3 &+ 0x2545_F491_4F6C_DD1D
                hash ^= hash >> 31
            }
            hash = mix(hash)
            hashes.append(hash)
            previous = hash
        }
        return hashes
    }

    public static func hashes(of bytes: [UInt8], blockBytes: Int = defaultBlockBytes, maxBlocks: Int = defaultMaxBlocks) -> [UInt64] {
        bytes.withUnsafeBytes { hashes(of: $0, blockBytes: blockBytes, maxBlocks: maxBlocks) }
    }

    /// A fixed 64-bit hash of any bytes (a session id): FNV-1a, then mixed.
    public static func key(of bytes: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return mix(hash)
    }

    /// SplitMix64's finaliser: every input bit moves every output bit.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
