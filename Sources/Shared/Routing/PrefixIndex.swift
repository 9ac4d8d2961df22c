import Atomics

/// Which upstreams recently served which prompt blocks (``PromptBlocks``), shared by every
/// worker through the segment so that they agree where a prefix is cached.
///
/// A fixed-size, set-associative table of 64-bit words: ``bucketCount`` buckets of
/// ``ways`` entries (one cache line each), the bucket chosen by the block's hash. An entry
/// packs a 32-bit tag of the hash, the upstream and a 24-bit stamp, and is changed only by
/// compare-and-swap: a worker killed mid-update leaves every word whole and nothing held.
///
/// Approximate LRU per upstream: each upstream counts the blocks recorded for it (a word in
/// its segment block); an entry's stamp is that count when the block was last served
/// there. Once more blocks than the upstream's cache holds were recorded after it, the
/// block has likely left that cache (vLLM evicts least recently used blocks), and the entry
/// no longer counts; a full bucket replaces its stalest entry.
public struct PrefixIndex: Sendable {
    /// Entries per bucket: 8 words, one 64-byte cache line.
    public static let ways = 8
    /// Buckets: 2^16 × 8 entries × 8 bytes = 4 MiB of the segment.
    public static let bucketCount = 1 << 16
    static var byteSize: Int { bucketCount * ways * 8 }
    static let stampBits: UInt64 = 24
    static let stampMask: UInt64 = (1 << stampBits) - 1
    /// An upstream whose cache size is not known keeps its entries until they are replaced.
    public static let unknownCapacity: UInt64 = stampMask / 2

    let segment: SharedSegment
    let offset: Int

    init(segment: SharedSegment, offset: Int) {
        self.segment = segment
        self.offset = offset
    }

    private func entry(bucket: Int, way: Int) -> UnsafeAtomic<UInt64> { segment.atomic(at: offset + (bucket * Self.ways + way) * 8) }

    static func bucket(of hash: UInt64) -> Int { Int(truncatingIfNeeded: hash & UInt64(bucketCount - 1)) }
    /// The hash's high 32 bits, never 0 (0 marks a free entry).
    static func tag(of hash: UInt64) -> UInt64 { max(hash >> 32, 1) }
    static func pack(tag: UInt64, upstream: Int, stamp: UInt64) -> UInt64 {
        tag << 32 | UInt64(upstream & 0xFF) << stampBits | (stamp & stampMask)
    }
    static func unpack(_ word: UInt64) -> (tag: UInt64, upstream: Int, stamp: UInt64) {
        (word >> 32, Int((word >> stampBits) & 0xFF), word & stampMask)
    }

    /// How many blocks after its last use an entry still counts, per upstream (its cache in
    /// blocks), and the upstreams' block counters now: what ``match`` and ``record`` read.
    /// Leading blocks held, per upstream `0..<count` (fixed-size: no heap allocation on the
    /// request path).
    public struct Matches: Sendable, Equatable, ExpressibleByArrayLiteral {
        public private(set) var count: Int
        private var blocks = InlineArray<16, Int>(repeating: 0)

        init(count: Int) { self.count = min(count, 16) }

        public init(arrayLiteral elements: Int...) {
            self.init(count: elements.count)
            for (upstream, held) in elements.prefix(count).enumerated() { blocks[upstream] = held }
        }

        public subscript(upstream: Int) -> Int {
            get { blocks[upstream] }
            set { blocks[upstream] = newValue }
        }

        /// As an array (tests, logs).
        public var array: [Int] { (0..<count).map { blocks[$0] } }

        public static func == (a: Self, b: Self) -> Bool { a.count == b.count && (0..<a.count).allSatisfy { a[$0] == b[$0] } }
    }

    /// Fixed-size (no heap allocation on the request path): one slot per upstream the
    /// segment tracks.
    public struct Clocks: Sendable {
        /// Upstreams `0..<count` have clocks.
        public private(set) var count = 0
        var counters = InlineArray<16, UInt64>(repeating: 0)
        var capacities = InlineArray<16, UInt64>(repeating: 0)

        public init() {}

        public init(counters: [UInt64], capacities: [UInt64]) {
            for (counter, capacity) in zip(counters, capacities) { append(counter: counter, capacity: capacity) }
        }

        /// The next upstream's clock (one past the 16th is not kept).
        public mutating func append(counter: UInt64, capacity: UInt64) {
            guard count < counters.count else { return }
            counters[count] = counter
            capacities[count] = capacity
            count += 1
        }

        /// The entry, stamped `stamp` for `upstream`, still counts.
        func isLive(upstream: Int, stamp: UInt64) -> Bool {
            guard upstream < count else { return false }
            return ((counters[upstream] &- stamp) & PrefixIndex.stampMask) < capacities[upstream]
        }

        /// How stale the entry is, as a share of its upstream's cache (> 1: gone).
        func staleness(upstream: Int, stamp: UInt64) -> Double {
            guard upstream < count, capacities[upstream] > 0 else { return .infinity }
            return Double((counters[upstream] &- stamp) & PrefixIndex.stampMask) / Double(capacities[upstream])
        }
    }

    /// For each upstream `0..<clocks.count`, how many leading blocks of `blocks` it
    /// holds (a block counts only when every block before it does, for that upstream).
    public func match(_ blocks: [UInt64], clocks: Clocks) -> Matches {
        let upstreams = clocks.count
        var matched = Matches(count: upstreams)
        guard upstreams > 0 else { return matched }
        var alive: UInt64 = (1 << UInt64(upstreams)) - 1
        for (index, hash) in blocks.enumerated() {
            let bucket = Self.bucket(of: hash)
            let tag = Self.tag(of: hash)
            var here: UInt64 = 0
            for way in 0..<Self.ways {
                let word = entry(bucket: bucket, way: way).load(ordering: .relaxed)
                guard word != 0 else { continue }
                let (entryTag, upstream, stamp) = Self.unpack(word)
                if entryTag == tag, upstream < upstreams, clocks.isLive(upstream: upstream, stamp: stamp) { here |= 1 << UInt64(upstream) }
            }
            alive &= here
            if alive == 0 { break }
            var rest = alive
            while rest != 0 {
                let upstream = rest.trailingZeroBitCount
                matched[upstream] = index + 1
                rest &= rest - 1
            }
        }
        return matched
    }

    /// Records that `upstream` is serving `blocks` (it will hold them in its cache): each
    /// block's entry for that upstream is refreshed, or claims a free or the stalest entry
    /// of its bucket. Only blocks it did not hold advance its clock, one tick each (an LRU
    /// cache evicts a block for each block it adds, not for each it reuses); the blocks it
    /// held are stamped with the clock after them (used now). Returns that clock.
    @discardableResult
    public func record(_ blocks: [UInt64], upstream: Int, counter: UnsafeAtomic<UInt64>, clocks: Clocks) -> UInt64 {
        guard !blocks.isEmpty, upstream >= 0, upstream < 256 else { return counter.load(ordering: .relaxed) }
        // Two passes rather than an array of what was held (no allocation): another worker
        // may change an entry between them, which moves one block's stamp, not the clock.
        let added = UInt64(blocks.lazy.filter { !holds($0, upstream: upstream, clocks: clocks) }.count)
        let first = counter.loadThenWrappingIncrement(by: added, ordering: .relaxed)
        let now = first &+ added
        var tick = first
        for hash in blocks {
            let wasHeld = tick == now || holds(hash, upstream: upstream, clocks: clocks)
            if !wasHeld { tick &+= 1 }
            let stamp = (wasHeld ? now : tick) & Self.stampMask
            place(Self.pack(tag: Self.tag(of: hash), upstream: upstream, stamp: stamp), bucket: Self.bucket(of: hash), upstream: upstream, clocks: clocks)
        }
        return now
    }

    /// Whether `upstream` holds the block `hash` (a live entry).
    func holds(_ hash: UInt64, upstream: Int, clocks: Clocks) -> Bool {
        let bucket = Self.bucket(of: hash)
        let tag = Self.tag(of: hash)
        for way in 0..<Self.ways {
            let (entryTag, entryUpstream, stamp) = Self.unpack(entry(bucket: bucket, way: way).load(ordering: .relaxed))
            if entryTag == tag && entryUpstream == upstream { return clocks.isLive(upstream: upstream, stamp: stamp) }
        }
        return false
    }

    private func place(_ desired: UInt64, bucket: Int, upstream: Int, clocks: Clocks) {
        let tag = desired >> 32
        // A few rounds: another worker may change the bucket under us; losing the race
        // costs a routing hint, never correctness.
        for _ in 0..<4 {
            var victim = 0
            var victimWord: UInt64 = 0
            var victimStaleness = -1.0
            for way in 0..<Self.ways {
                let word = entry(bucket: bucket, way: way).load(ordering: .relaxed)
                if word == 0 {
                    if victimStaleness < .infinity {
                        (victim, victimWord, victimStaleness) = (way, 0, .infinity)
                    }
                    continue
                }
                let (entryTag, entryUpstream, stamp) = Self.unpack(word)
                if entryTag == tag && entryUpstream == upstream {
                    (victim, victimWord) = (way, word)
                    break
                }
                let staleness = clocks.staleness(upstream: entryUpstream, stamp: stamp)
                if staleness > victimStaleness { (victim, victimWord, victimStaleness) = (way, word, staleness) }
            }
            let (exchanged, _) = entry(bucket: bucket, way: victim).compareExchange(expected: victimWord, desired: desired, ordering: .relaxed)
            if exchanged { return }
        }
    }
}

extension SharedSegment {
    /// The prefix index every worker shares.
    public var prefixIndex: PrefixIndex { PrefixIndex(segment: self, offset: SegmentLayout.prefixIndexOffset) }

    /// The upstreams' prefix-index clocks now, for upstreams `0..<count`.
    public func prefixClocks(upstreams count: Int) -> PrefixIndex.Clocks {
        let count = min(count, SegmentLayout.maxUpstreams)
        var clocks = PrefixIndex.Clocks()
        for index in 0..<count {
            let status = upstream(index)
            let capacity = status.cacheBlocks
            clocks.append(
                counter: status.prefixBlockCounter.load(ordering: .relaxed),
                capacity: capacity == 0 ? PrefixIndex.unknownCapacity : min(capacity, PrefixIndex.unknownCapacity))
        }
        return clocks
    }
}

extension UpstreamStatus {
    /// Prompt blocks recorded for this upstream in the ``PrefixIndex``: its LRU clock.
    public var prefixBlockCounter: UnsafeAtomic<UInt64> { segment.atomic(at: offset + SegmentLayout.Upstream.prefixBlocks.rawValue) }

    /// How many ``PromptBlocks`` this upstream's prefix cache holds (0 = not known):
    /// published by the supervisor from the upstream's `/metrics`.
    public var cacheBlocks: UInt64 {
        get { segment.atomic(at: offset + SegmentLayout.Upstream.cacheBlocks.rawValue).load(ordering: .relaxed) }
        nonmutating set { segment.atomic(at: offset + SegmentLayout.Upstream.cacheBlocks.rawValue).store(newValue, ordering: .relaxed) }
    }
}
