import Atomics

/// Which upstream created which stored response (OpenAI's Responses API): vLLM keeps a
/// response in the memory of the replica that made it, so a follow-up naming it
/// (`previous_response_id`, `GET /v1/responses/{id}`, `…/cancel`) must reach that replica.
/// Shared by every worker through the segment, so any worker finds what another recorded.
///
/// A fixed-size, set-associative table of 64-bit words like ``PrefixIndex``: ``bucketCount``
/// buckets of ``ways`` entries. An entry packs a 40-bit tag of the id's hash, the model's
/// position in the configuration (plus one; 0 for a discovered model) and the upstream, and is
/// changed only by compare-and-swap or a plain store of a whole word: a worker killed
/// mid-update leaves nothing half-written. A full bucket overwrites one entry, chosen by the
/// new id's hash: the table forgets old ids, and a forgotten id goes wherever its model's
/// routing sends it (that upstream answers 404 if it does not have it).
public struct ResponseOwners: Sendable {
    /// Entries per bucket: one 64-byte cache line.
    public static let ways = 8
    /// Buckets: 2^13 × 8 entries = 65,536 ids, 512 KiB of the segment.
    public static let bucketCount = 1 << 13
    static var byteSize: Int { bucketCount * ways * 8 }

    /// Who owns a response.
    public struct Owner: Sendable, Equatable {
        public var upstream: Int
        /// The configured model's position (nil: a discovered model).
        public var modelPosition: Int?

        public init(upstream: Int, modelPosition: Int?) {
            self.upstream = upstream
            self.modelPosition = modelPosition
        }
    }

    let segment: SharedSegment
    let offset: Int

    private func entry(bucket: Int, way: Int) -> UnsafeAtomic<UInt64> { segment.atomic(at: offset + (bucket * Self.ways + way) * 8) }

    /// Remembers that `owner` holds the response `id`.
    public func record(_ id: String, owner: Owner) {
        guard (0..<256).contains(owner.upstream), (owner.modelPosition ?? 0) < 0xFFFF else { return }
        let hash = PromptBlocks.key(of: Array(id.utf8))
        let bucket = Int(truncatingIfNeeded: hash & UInt64(Self.bucketCount - 1))
        let tag = Self.tag(of: hash)
        let word = tag << 24 | UInt64((owner.modelPosition ?? -1) + 1) << 8 | UInt64(owner.upstream)
        var free: Int?
        for way in 0..<Self.ways {
            let current = entry(bucket: bucket, way: way).load(ordering: .relaxed)
            if current >> 24 == tag {
                entry(bucket: bucket, way: way).store(word, ordering: .relaxed)
                return
            }
            if current == 0 && free == nil { free = way }
        }
        if let free, entry(bucket: bucket, way: free).compareExchange(expected: 0, desired: word, ordering: .relaxed).exchanged { return }
        // Full (or the free entry was just taken): forget one id of the bucket.
        entry(bucket: bucket, way: Int(truncatingIfNeeded: (hash >> 13) % UInt64(Self.ways))).store(word, ordering: .relaxed)
    }

    /// The owner recorded for `id`, if the table still has it.
    public func owner(of id: String) -> Owner? {
        let hash = PromptBlocks.key(of: Array(id.utf8))
        let bucket = Int(truncatingIfNeeded: hash & UInt64(Self.bucketCount - 1))
        let tag = Self.tag(of: hash)
        for way in 0..<Self.ways {
            let word = entry(bucket: bucket, way: way).load(ordering: .relaxed)
            guard word >> 24 == tag else { continue }
            let position = Int((word >> 8) & 0xFFFF)
            return Owner(upstream: Int(word & 0xFF), modelPosition: position == 0 ? nil : position - 1)
        }
        return nil
    }

    /// The id of a created response in a non-streamed answer: its top-level `id`, when
    /// `object` is `response`.
    public static func responseID(inAnswer json: [UInt8]) -> String? {
        json.withUnsafeBytes { raw in
            guard let members = try? JSONScanner.objectMembers(raw),
                let object = members.first(where: { $0.key == "object" }), JSONScanner.string(raw, object.value) == "response"
            else { return nil }
            return id(in: raw, members)
        }
    }

    /// The id of the response a stream event is about (`response.created` and the other
    /// events carrying the whole `response`).
    public static func responseID(inEvent json: [UInt8]) -> String? {
        json.withUnsafeBytes { raw in
            guard let members = try? JSONScanner.objectMembers(raw), let response = members.first(where: { $0.key == "response" }),
                raw[response.value.lowerBound] == UInt8(ascii: "{"), let inner = try? JSONScanner.objectMembers(raw, range: response.value)
            else { return nil }
            return id(in: raw, inner)
        }
    }

    private static func id(in raw: UnsafeRawBufferPointer, _ members: [JSONScanner.Member]) -> String? {
        guard let member = members.first(where: { $0.key == "id" }), let id = JSONScanner.string(raw, member.value),
            Route.isResponseID(id.utf8)
        else { return nil }
        return id
    }

    /// 40 bits of the hash, never 0 (0 marks a free entry).
    static func tag(of hash: UInt64) -> UInt64 { max(hash >> 24, 1) }
}

extension SharedSegment {
    /// The response-id table every worker shares.
    public var responseOwners: ResponseOwners { ResponseOwners(segment: self, offset: SegmentLayout.responseOwnersOffset) }
}
