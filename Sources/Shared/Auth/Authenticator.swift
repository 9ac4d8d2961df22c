import Crypto

/// Who a request is, as far as limits and model scopes go.
public struct ClientIdentity: Sendable, Equatable {
    /// The configured key's name (`default` for `BEARER_TOKEN`, `anonymous` with auth off).
    /// Safe to log; never the key.
    public var name: String
    /// Bucket key in the rate-limit tables (from the key's digest).
    public var keyID: UInt64
    /// Models this key may use; nil = all.
    public var models: Set<String>?
    public var requestsPerMinute: Int
    /// 0 = no token limit.
    public var tokensPerMinute: Int

    /// This key with its limits divided by `divisor` (at least 1 per minute each; a token
    /// limit that is off stays off): one host's share while the hosts cannot share them.
    public func dividingLimits(by divisor: Int) -> ClientIdentity {
        guard divisor > 1 else { return self }
        var share = self
        share.requestsPerMinute = max(1, requestsPerMinute / divisor)
        if tokensPerMinute > 0 { share.tokensPerMinute = max(1, tokensPerMinute / divisor) }
        return share
    }
}

/// Checks `Authorization: Bearer <key>` against `BEARER_TOKEN` or the config file's key
/// digests. Keys are compared as SHA-256 digests in constant time (every configured digest
/// is compared, whatever matches), and only digests are kept in memory.
public struct Authenticator: Sendable {
    struct Entry: Sendable {
        var digest: [UInt8]
        var identity: ClientIdentity
    }

    let entries: [Entry]
    let enabled: Bool
    let defaults: GatewayConfiguration.Limits

    public init(configuration: GatewayConfiguration) {
        let limits = configuration.limits
        defaults = limits
        enabled = configuration.auth.isEnabled
        var entries: [Entry] = []
        if let token = configuration.auth.bearerToken, !token.isEmpty {
            let digest = Array(SHA256.hash(data: Array(token.utf8)))
            entries.append(
                Entry(
                    digest: digest,
                    identity: ClientIdentity(
                        name: "default", keyID: Self.keyID(digest), models: nil,
                        requestsPerMinute: limits.requestsPerMinute, tokensPerMinute: limits.tokensPerMinute)))
        }
        for key in configuration.auth.keys {
            let digest = Self.bytes(hex: key.sha256)
            entries.append(
                Entry(
                    digest: digest,
                    identity: ClientIdentity(
                        name: key.name, keyID: Self.keyID(digest), models: key.models.map(Set.init),
                        requestsPerMinute: key.rpm ?? limits.requestsPerMinute, tokensPerMinute: key.tpm ?? limits.tokensPerMinute)))
        }
        self.entries = entries
    }

    /// The identity for an `Authorization` header value, or nil (401).
    ///
    /// With auth off every request is admitted; a request that still presents a key is
    /// limited per presented key, one without shares the `anonymous` bucket.
    public func authenticate(authorization: String?) -> ClientIdentity? {
        let presented = authorization.flatMap(Self.bearerToken)
        guard enabled else {
            let keyID = presented.map { Self.keyID(Array(SHA256.hash(data: Array($0.utf8)))) } ?? 1
            return ClientIdentity(
                name: "anonymous", keyID: keyID, models: nil,
                requestsPerMinute: defaults.requestsPerMinute, tokensPerMinute: defaults.tokensPerMinute)
        }
        guard var presented, !presented.isEmpty else { return nil }
        // Hashed and compared in place: no array of the key or its digest per request.
        let digest = presented.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
        return digest.withUnsafeBytes { digest in
            var match: ClientIdentity?
            for entry in entries where Self.constantTimeEqual(entry.digest, digest) && match == nil {
                match = entry.identity
            }
            return match
        }
    }

    /// ``authenticate(authorization:)`` for a request on a connection that remembers its last
    /// credential: a keep-alive client sends the same header on every request, and the same
    /// header resolves to the same identity without a second SHA-256 (a short keyed hash
    /// recognises it; see ``RememberedCredential``). A header that does not authenticate is
    /// never remembered, and one that differs goes the whole way.
    public func authenticate(authorization: String?, remembering memo: inout RememberedCredential?) -> ClientIdentity? {
        if let memo, let authorization, memo.matches(authorization) { return memo.identity }
        let identity = authenticate(authorization: authorization)
        if let identity, let authorization {
            memo = RememberedCredential(authorization: authorization, identity: identity)
        }
        return identity
    }

    /// The key from `Bearer <key>` (scheme case-insensitive).
    /// Byte-wise: it runs on every request.
    static func bearerToken(_ header: String) -> String? {
        let bytes = header.utf8
        var i = bytes.startIndex
        while i != bytes.endIndex, bytes[i] == 0x20 { i = bytes.index(after: i) }
        let schemeStart = i
        while i != bytes.endIndex, bytes[i] != 0x20 { i = bytes.index(after: i) }
        let scheme = bytes[schemeStart..<i]
        // ASCII letters differ from their capitals in bit 0x20 only.
        guard scheme.count == 6, zip(scheme, "bearer".utf8).allSatisfy({ $0 | 0x20 == $1 }) else { return nil }
        // The token: what follows, without surrounding spaces and tabs (HTTP's whitespace).
        while i != bytes.endIndex, bytes[i] == 0x20 || bytes[i] == 0x09 { i = bytes.index(after: i) }
        var end = bytes.endIndex
        while end != i, bytes[bytes.index(before: end)] == 0x20 || bytes[bytes.index(before: end)] == 0x09 { end = bytes.index(before: end) }
        return i == end ? nil : String(header[i..<end])
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in 0..<a.count { difference |= a[i] ^ b[i] }
        return difference == 0
    }

    static func keyID(_ digest: [UInt8]) -> UInt64 {
        var id: UInt64 = 0
        for byte in digest.prefix(8) { id = id << 8 | UInt64(byte) }
        return id == 0 ? 1 : id
    }

    static func bytes(hex: String) -> [UInt8] {
        var result: [UInt8] = []
        var iterator = hex.utf8.makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            result.append((high.hexDigitValue ?? 0) << 4 | (low.hexDigitValue ?? 0))
        }
        return result
    }
}

/// What a connection's last authenticated request presented, and whom it named (see
/// ``Authenticator/authenticate(authorization:remembering:)``). Held by one connection for
/// as long as it is open; the worker's keys do not change meanwhile (a configuration
/// reload replaces the workers).
///
/// Not the header itself: a 64-bit SipHash of it under a key drawn at random per process,
/// so worker memory still holds no key beyond the request being read, and a header that
/// is not the remembered one matches with odds of 2⁻⁶⁴ (no one outside the process can
/// compute the tag, so it cannot be searched for).
public struct RememberedCredential: Sendable {
    let tag: Int
    let identity: ClientIdentity

    init(authorization: String, identity: ClientIdentity) {
        self.tag = Self.tag(of: authorization)
        self.identity = identity
    }

    /// Whether `header` is (with the odds above) the remembered header.
    func matches(_ header: String) -> Bool { Self.tag(of: header) == tag }

    /// The process's own hashing key, on top of the standard library's per-process seed
    /// (which `SWIFT_DETERMINISTIC_HASHING` would zero).
    private static let key = (UInt64.random(in: .min ... .max), UInt64.random(in: .min ... .max))

    static func tag(of header: String) -> Int {
        var hasher = Hasher()
        hasher.combine(key.0)
        hasher.combine(key.1)
        var header = header
        header.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        return hasher.finalize()
    }
}
