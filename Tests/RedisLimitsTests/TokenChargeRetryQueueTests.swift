import Shared
import Testing

@testable import RedisLimits

/// Failed token charges: retried with backoff, merged per key, bounded, drops counted.
@Suite struct TokenChargeRetryQueueTests {
    static let gcra = GCRA(rate: 1000)

    static func charge(_ key: UInt64, _ cost: UInt64) -> TokenChargeRetryQueue.Charge { .init(keyID: key, gcra: gcra, cost: cost) }

    @Test func aFailedChargeComesBackAfterItsBackoff() {
        var queue = TokenChargeRetryQueue()
        #expect(queue.nextDue == nil)
        queue.failed(Self.charge(1, 50), now: 1000)
        #expect(queue.count == 1 && queue.nextDue == 101_000)
        #expect(queue.takeDue(now: 100_999).isEmpty)
        let due = queue.takeDue(now: 101_000)
        #expect(due.map(\.charge) == [Self.charge(1, 50)] && due.map(\.attempts) == [1])
        #expect(queue.count == 0 && queue.nextDue == nil)
    }

    @Test func backoffDoublesUpToItsMaximum() {
        let queue = TokenChargeRetryQueue()
        #expect((1...8).map { queue.backoff(attempts: $0) } == [100_000, 200_000, 400_000, 800_000, 1_600_000, 3_200_000, 5_000_000, 5_000_000])
        #expect(queue.backoff(attempts: 10_000) == 5_000_000)
    }

    @Test func retriesBackOffAndStopAfterMaxAttempts() {
        var configuration = TokenChargeRetryQueue.Configuration()
        configuration.maxAttempts = 3
        var queue = TokenChargeRetryQueue(configuration: configuration)
        queue.failed(Self.charge(1, 5), now: 0)
        var now: UInt64 = 100_000
        var pending = queue.takeDue(now: now)[0]
        queue.retryFailed(pending, now: now)
        #expect(queue.nextDue == now + 200_000)
        now += 200_000
        pending = queue.takeDue(now: now)[0]
        #expect(pending.attempts == 2)
        queue.retryFailed(pending, now: now)  // the third failure: dropped
        #expect(queue.count == 0 && queue.dropped == 1)
    }

    @Test func chargesOfOneKeyAreMerged() {
        var queue = TokenChargeRetryQueue()
        queue.failed(Self.charge(1, 5), now: 0)
        queue.failed(Self.charge(2, 7), now: 10)
        queue.failed(Self.charge(1, 6), now: 20)
        queue.failed(.init(keyID: 1, gcra: GCRA(rate: 5), cost: 1), now: 30)  // another limit: its own entry
        #expect(queue.count == 3)
        let due = queue.takeDue(now: 1_000_000)
        #expect(due.map(\.charge) == [Self.charge(1, 11), Self.charge(2, 7), .init(keyID: 1, gcra: GCRA(rate: 5), cost: 1)])
        queue.failed(.init(keyID: 3, gcra: Self.gcra, cost: .max), now: 0)
        queue.failed(Self.charge(3, 10), now: 0)
        #expect(queue.takeDue(now: 1_000_000).map(\.charge.cost) == [.max])
    }

    @Test func whenFullTheOldestIsDroppedAndCounted() {
        var configuration = TokenChargeRetryQueue.Configuration()
        configuration.capacity = 3
        var queue = TokenChargeRetryQueue(configuration: configuration)
        for key in 1...5 { queue.failed(Self.charge(UInt64(key), 1), now: UInt64(key)) }
        #expect(queue.count == 3 && queue.dropped == 2)
        #expect(queue.takeDue(now: .max).map(\.charge.keyID) == [3, 4, 5])
    }

    @Test func aRetriedChargeKeepsItsAgeWhenFull() {
        var configuration = TokenChargeRetryQueue.Configuration()
        configuration.capacity = 2
        var queue = TokenChargeRetryQueue(configuration: configuration)
        queue.failed(Self.charge(1, 1), now: 0)
        let first = queue.takeDue(now: 100_000)[0]
        queue.failed(Self.charge(2, 1), now: 150_000)
        queue.retryFailed(first, now: 160_000)  // back in, still the oldest
        queue.failed(Self.charge(3, 1), now: 170_000)
        #expect(queue.dropped == 1)
        #expect(queue.takeDue(now: .max).map(\.charge.keyID) == [2, 3])
    }
}
