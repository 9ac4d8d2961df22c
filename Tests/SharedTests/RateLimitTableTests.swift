import Testing

@testable import Shared

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct RateLimitTableTests {
    @Test func twoMappingsShareExactlyOneBucket() throws {
        let a = try SharedSegment.create(supervisorPID: 1)
        let b = try SharedSegment.attach(fileDescriptor: dup(a.fileDescriptor))
        let tableA = RateLimitTable(segment: a, offset: SegmentLayout.requestLimitsOffset)
        let tableB = RateLimitTable(segment: b, offset: SegmentLayout.requestLimitsOffset)
        let gcra = GCRA(rate: 100)
        let now: UInt64 = 1_000_000_000
        var allowed = 0
        for i in 0..<300 {
            if case .allowed = (i % 2 == 0 ? tableA : tableB).take(key: 42, gcra: gcra, now: now) { allowed += 1 }
        }
        #expect(allowed == 100)
    }

    @Test func concurrentTakersNeverOvershoot() async throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let table = RateLimitTable(segment: segment, offset: SegmentLayout.requestLimitsOffset)
        let gcra = GCRA(rate: 1000)
        let now: UInt64 = 7_000_000_000
        let allowed = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var n = 0
                    for _ in 0..<500 { if case .allowed = table.take(key: 9, gcra: gcra, now: now) { n += 1 } }
                    return n
                }
            }
            return await group.reduce(0, +)
        }
        #expect(allowed == 1000)
    }

    @Test func onlyRefilledEntriesAreEvictedAndAFullTableRefuses() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let table = RateLimitTable(segment: segment, offset: SegmentLayout.requestLimitsOffset)
        let gcra = GCRA(rate: 2)  // refills one request per 30 s
        var now: UInt64 = 1_000_000_000
        #expect(table.take(key: 1, gcra: gcra, now: now) != .tableFull)
        #expect(table.take(key: 1, gcra: gcra, now: now) != .tableFull)
        guard case .limited = table.take(key: 1, gcra: gcra, now: now) else {
            Issue.record("key 1 should be limited")
            return
        }
        var full = 0
        for key in UInt64(2)...UInt64(20_000) {
            if table.take(key: key, gcra: gcra, now: now) == .tableFull { full += 1 }
        }
        #expect(table.occupied == RateLimitTable.capacity)
        #expect(full > 10_000)
        // key 1 was active (not refilled): never evicted, still limited
        guard case .limited = table.take(key: 1, gcra: gcra, now: now) else {
            Issue.record("an active key lost its bucket")
            return
        }
        // a minute later every bucket is full again: new keys evict them
        now += 61_000_000
        for key in UInt64(30_000)...UInt64(30_100) {
            #expect(table.take(key: key, gcra: gcra, now: now) != .tableFull)
        }
    }
}
