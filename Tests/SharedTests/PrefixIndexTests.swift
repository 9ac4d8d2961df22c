import Atomics
import Testing

@testable import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Prompt blocks and the prefix index the workers share: chained hashes, matches that stop
/// at the first missing block, an LRU clock per upstream, concurrent writers in two
/// mappings, and a table left in any state by a killed writer.
@Suite struct PrefixIndexTests {
    static func prompt(_ seed: UInt64, bytes: Int) -> [UInt8] {
        var random = SplitMix64(seed: seed)
        return (0..<bytes).map { _ in UInt8.random(in: 0x20...0x7E, using: &random) }
    }

    @Test func blockHashesChain() {
        let a = Self.prompt(1, bytes: 1024)
        var b = a
        b[10] ^= 1  // differs in the first block only
        let ha = PromptBlocks.hashes(of: a)
        let hb = PromptBlocks.hashes(of: b)
        #expect(ha.count == 4 && hb.count == 4)
        #expect(zip(ha, hb).allSatisfy { $0 != $1 }, "a change in block 0 changes every block after it")
        var c = a
        c[900] ^= 1  // differs in the last block only
        let hc = PromptBlocks.hashes(of: c)
        #expect(Array(hc.prefix(3)) == Array(ha.prefix(3)) && hc[3] != ha[3])
    }

    @Test func onlyWholeBlocksAreHashedAndAtMostTheLimit() {
        #expect(PromptBlocks.hashes(of: Self.prompt(2, bytes: 255)).isEmpty)
        #expect(PromptBlocks.hashes(of: Self.prompt(2, bytes: 767)).count == 2)
        #expect(PromptBlocks.hashes(of: Self.prompt(2, bytes: 10_000), maxBlocks: 3).count == 3)
        let grown = Self.prompt(3, bytes: 2048)
        #expect(Array(PromptBlocks.hashes(of: grown).prefix(4)) == PromptBlocks.hashes(of: Array(grown.prefix(1100))), "a longer turn keeps the hashes")
    }

    @Test func theHashIsFixedAcrossProcessesAndBuilds() {
        // Independent gateways (and a gateway after an upgrade) must cut and hash alike: the
        // values are part of the contract, so a change of the hash fails here.
        #expect(PromptBlocks.hashes(of: Array(repeating: UInt8(ascii: "a"), count: 300)) == [13_465_191_703_255_688_297])
        let prompt = Array("You are a helpful assistant. ".utf8) + Array(repeating: UInt8(ascii: "x"), count: 483)
        #expect(PromptBlocks.hashes(of: prompt) == [10_286_425_805_724_946_071, 8_220_563_807_784_258_907])
    }

    func fresh(upstreams: Int = 4) throws -> (SharedSegment, PrefixIndex) {
        let segment = try SharedSegment.create(supervisorPID: 1)
        return (segment, segment.prefixIndex)
    }

    @Test func aMatchCountsLeadingBlocksPerUpstream() throws {
        let (segment, index) = try fresh()
        let blocks = PromptBlocks.hashes(of: Self.prompt(4, bytes: 256 * 10))
        let clocks = { segment.prefixClocks(upstreams: 4) }
        index.record(Array(blocks.prefix(6)), upstream: 1, counter: segment.upstream(1).prefixBlockCounter, clocks: clocks())
        index.record(Array(blocks.prefix(3)), upstream: 2, counter: segment.upstream(2).prefixBlockCounter, clocks: clocks())
        index.record([blocks[0], blocks[1], blocks[5]], upstream: 3, counter: segment.upstream(3).prefixBlockCounter, clocks: clocks())
        #expect(index.match(blocks, clocks: clocks()) == [0, 6, 3, 2], "upstream 3 lacks block 2: its match stops there")
        #expect(index.match(PromptBlocks.hashes(of: Self.prompt(5, bytes: 2560)), clocks: clocks()) == [0, 0, 0, 0])
    }

    @Test func entriesOlderThanTheUpstreamsCacheStopCounting() throws {
        let (segment, index) = try fresh()
        segment.upstream(0).cacheBlocks = 8
        let counter = segment.upstream(0).prefixBlockCounter
        let first = PromptBlocks.hashes(of: Self.prompt(6, bytes: 256 * 4))
        index.record(first, upstream: 0, counter: counter, clocks: segment.prefixClocks(upstreams: 1))
        #expect(index.match(first, clocks: segment.prefixClocks(upstreams: 1)) == [4])
        // Four more blocks: all eight fit the cache.
        index.record(PromptBlocks.hashes(of: Self.prompt(7, bytes: 256 * 4)), upstream: 0, counter: counter, clocks: segment.prefixClocks(upstreams: 1))
        #expect(index.match(first, clocks: segment.prefixClocks(upstreams: 1)) == [4])
        // One more: the first prompt's block 0 is the least recently used of nine.
        index.record(PromptBlocks.hashes(of: Self.prompt(8, bytes: 256)), upstream: 0, counter: counter, clocks: segment.prefixClocks(upstreams: 1))
        #expect(index.match(first, clocks: segment.prefixClocks(upstreams: 1)) == [0], "block 0 was evicted, so nothing after it counts")
        // Served again: fresh.
        index.record(first, upstream: 0, counter: counter, clocks: segment.prefixClocks(upstreams: 1))
        #expect(index.match(first, clocks: segment.prefixClocks(upstreams: 1)) == [4])
    }

    @Test func reusingHeldBlocksDoesNotAgeTheOthers() throws {
        let (segment, index) = try fresh()
        segment.upstream(0).cacheBlocks = 8
        let counter = segment.upstream(0).prefixBlockCounter
        let clocks = { segment.prefixClocks(upstreams: 1) }
        let tenantA = PromptBlocks.hashes(of: Self.prompt(20, bytes: 256 * 4))
        let tenantB = PromptBlocks.hashes(of: Self.prompt(21, bytes: 256 * 4))
        index.record(tenantA, upstream: 0, counter: counter, clocks: clocks())
        index.record(tenantB, upstream: 0, counter: counter, clocks: clocks())
        // A's and B's prompts come back again and again: the cache (8 blocks) holds both.
        for _ in 0..<10 {
            index.record(tenantA, upstream: 0, counter: counter, clocks: clocks())
            index.record(tenantB, upstream: 0, counter: counter, clocks: clocks())
        }
        #expect(index.match(tenantA, clocks: clocks()) == [4] && index.match(tenantB, clocks: clocks()) == [4])
        #expect(counter.load(ordering: .relaxed) == 8, "only the blocks added moved the clock")
    }

    @Test func aFullBucketGivesUpItsStalestEntry() throws {
        let (segment, index) = try fresh()
        // Ways + 1 hashes that share a bucket (same low bits), different tags.
        let hashes = (0...PrefixIndex.ways).map { UInt64($0 + 1) << 32 | 0x1234 }
        let counter = segment.upstream(0).prefixBlockCounter
        for hash in hashes { index.record([hash], upstream: 0, counter: counter, clocks: segment.prefixClocks(upstreams: 1)) }
        let clocks = segment.prefixClocks(upstreams: 1)
        #expect(index.match([hashes[0]], clocks: clocks) == [0], "the oldest was replaced")
        for hash in hashes.dropFirst() { #expect(index.match([hash], clocks: clocks) == [1]) }
    }

    @Test func twoMappingsSeeTheSameIndexAndConcurrentWritersLoseNothingStructural() async throws {
        let a = try SharedSegment.create(supervisorPID: 1)
        let b = try SharedSegment.attach(fileDescriptor: dup(a.fileDescriptor))
        let prompts = (0..<64).map { PromptBlocks.hashes(of: Self.prompt(100 + UInt64($0), bytes: 256 * 4)) }
        await withTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                let segment = writer % 2 == 0 ? a : b
                group.addTask {
                    for (i, blocks) in prompts.enumerated() where i % 4 == writer {
                        segment.prefixIndex.record(
                            blocks, upstream: i % 3, counter: segment.upstream(i % 3).prefixBlockCounter,
                            clocks: segment.prefixClocks(upstreams: 3))
                    }
                }
            }
        }
        let clocks = b.prefixClocks(upstreams: 3)
        for (i, blocks) in prompts.enumerated() {
            var expected = [0, 0, 0]
            expected[i % 3] = 4
            #expect(b.prefixIndex.match(blocks, clocks: clocks).array == expected)
        }
        #expect((0..<clocks.count).map { clocks.counters[$0] }.reduce(0, +) == 64 * 4, "every block added once")
    }

    @Test func theFixedSizeClocksHoldEveryUpstreamTheSegmentTracks() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        #expect(PrefixIndex.Clocks().counters.count == SegmentLayout.maxUpstreams)
        #expect(segment.prefixClocks(upstreams: 99).count == SegmentLayout.maxUpstreams)
        #expect(segment.prefixIndex.match([1, 2], clocks: segment.prefixClocks(upstreams: 16)).count == 16)
    }

    @Test func aTableLeftInAnyStateStillWorks() throws {
        // A writer killed at any instant leaves whole words (each update is one CAS); here
        // the whole region holds arbitrary words, as if many had been.
        let (segment, index) = try fresh()
        var random = SplitMix64(seed: 9)
        for word in 0..<(PrefixIndex.bucketCount * PrefixIndex.ways) where word % 3 == 0 {
            segment.atomic(at: SegmentLayout.prefixIndexOffset + word * 8).store(UInt64.random(in: 0...UInt64.max, using: &random), ordering: .relaxed)
        }
        let blocks = PromptBlocks.hashes(of: Self.prompt(11, bytes: 256 * 8))
        index.record(blocks, upstream: 2, counter: segment.upstream(2).prefixBlockCounter, clocks: segment.prefixClocks(upstreams: 4))
        #expect(index.match(blocks, clocks: segment.prefixClocks(upstreams: 4))[2] == 8)
    }
}
