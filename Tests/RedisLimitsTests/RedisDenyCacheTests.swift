import Shared
import Testing

@testable import RedisLimits

/// Refusals remembered until their retry time, and nothing else.
@Suite struct RedisDenyCacheTests {
    @Test func aRefusalIsRememberedUntilItsRetryTime() {
        var cache = RedisDenyCache()
        cache.record(keyID: 7, limit: .requests, outcome: .limited(retryAfterMicros: 500, resetMicros: 60_000), now: 1000)
        #expect(cache.denial(keyID: 7, now: 1000) == .init(limit: .requests, outcome: .limited(retryAfterMicros: 500, resetMicros: 60_000)))
        #expect(cache.denial(keyID: 7, now: 1400) == .init(limit: .requests, outcome: .limited(retryAfterMicros: 100, resetMicros: 59_600)))
        #expect(cache.denial(keyID: 8, now: 1400) == nil)
        #expect(cache.denial(keyID: 7, now: 1500) == nil)  // the retry may succeed: ask Redis
        #expect(cache.count == 0)
    }

    @Test func admissionsAreNotRemembered() {
        var cache = RedisDenyCache()
        cache.record(keyID: 7, limit: .requests, outcome: .allowed(remaining: 3, resetMicros: 10), now: 0)
        cache.record(keyID: 7, limit: .tokens, outcome: .limited(retryAfterMicros: 0, resetMicros: 10), now: 0)
        cache.record(keyID: 7, limit: .requests, outcome: .tableFull, now: 0)
        #expect(cache.denial(keyID: 7, now: 0) == nil)
        #expect(cache.count == 0)
    }

    @Test func theLaterRefusalOfAKeyWins() {
        var cache = RedisDenyCache()
        cache.record(keyID: 1, limit: .requests, outcome: .limited(retryAfterMicros: 100, resetMicros: 100), now: 0)
        cache.record(keyID: 1, limit: .tokens, outcome: .limited(retryAfterMicros: 5000, resetMicros: 9000), now: 10)
        #expect(cache.denial(keyID: 1, now: 200)?.limit == .tokens)
        cache.record(keyID: 1, limit: .requests, outcome: .limited(retryAfterMicros: 10, resetMicros: 10), now: 300)
        #expect(cache.denial(keyID: 1, now: 400) == .init(limit: .tokens, outcome: .limited(retryAfterMicros: 4610, resetMicros: 8610)))
    }

    @Test func boundedExpiredFirstThenSoonestToExpire() {
        var cache = RedisDenyCache(capacity: 3)
        cache.record(keyID: 1, limit: .requests, outcome: .limited(retryAfterMicros: 100, resetMicros: 100), now: 0)
        cache.record(keyID: 2, limit: .requests, outcome: .limited(retryAfterMicros: 900, resetMicros: 900), now: 0)
        cache.record(keyID: 3, limit: .requests, outcome: .limited(retryAfterMicros: 500, resetMicros: 500), now: 0)
        // Key 1 expired: it makes room.
        cache.record(keyID: 4, limit: .requests, outcome: .limited(retryAfterMicros: 800, resetMicros: 800), now: 200)
        #expect(cache.count == 3)
        #expect(cache.denial(keyID: 2, now: 200) != nil && cache.denial(keyID: 3, now: 200) != nil && cache.denial(keyID: 4, now: 200) != nil)
        // None expired: the soonest (key 3) goes.
        cache.record(keyID: 5, limit: .tokens, outcome: .limited(retryAfterMicros: 800, resetMicros: 800), now: 300)
        #expect(cache.count == 3)
        #expect(cache.denial(keyID: 3, now: 300) == nil)
        #expect(cache.denial(keyID: 2, now: 300) != nil && cache.denial(keyID: 5, now: 300)?.limit == .tokens)
    }

    @Test func hugeRetryTimesSaturate() {
        var cache = RedisDenyCache()
        cache.record(keyID: 1, limit: .tokens, outcome: .limited(retryAfterMicros: .max, resetMicros: .max), now: 10)
        #expect(cache.denial(keyID: 1, now: 20) == .init(limit: .tokens, outcome: .limited(retryAfterMicros: .max - 20, resetMicros: .max - 20)))
    }
}
