import Foundation
import NIOCore
import Redis
import Shared
import Testing

@testable import RedisLimits

/// The GCRA scripts against a real `redis-server`: the same math as ``GCRA`` (on a clock
/// the test sets, step for step against the Swift model), exact admission under
/// concurrency from several connections, token debt, and keys that expire.
@Suite struct RedisLimitScriptsTests {
    /// `script` reading its clock from its last two arguments (seconds, microseconds)
    /// instead of `TIME`, so the test decides what "now" is.
    static func onTestClock(_ script: RedisScript) -> RedisScript {
        let clock = "local clock = redis.call('TIME')"
        precondition(script.source.contains(clock))
        return RedisScript(script.source.replacingOccurrences(of: clock, with: "local clock = {ARGV[#ARGV - 1], ARGV[#ARGV]}"))
    }

    enum Operation: CaseIterable { case take, check, charge }

    /// What ``RateLimitTable`` does with a bucket whose TAT is `tat` (nil: no entry): the
    /// TAT to store (nil: none) and the outcome.
    static func model(_ operation: Operation, gcra: GCRA, tat stored: UInt64?, now: UInt64, cost: UInt64) -> (UInt64?, RateLimitTable.Outcome) {
        let tat = stored ?? now
        switch operation {
        case .take:
            switch gcra.take(tat: tat, now: now, cost: cost) {
            case .allow(let newTAT):
                return (newTAT, .allowed(remaining: gcra.remaining(tat: newTAT, now: now), resetMicros: gcra.resetMicros(tat: newTAT, now: now)))
            case .deny(let retry):
                return (stored, .limited(retryAfterMicros: retry, resetMicros: gcra.resetMicros(tat: tat, now: now)))
            }
        case .check:
            if let retry = gcra.check(tat: tat, now: now) {
                return (stored, .limited(retryAfterMicros: retry, resetMicros: gcra.resetMicros(tat: tat, now: now)))
            }
            return (stored, .allowed(remaining: gcra.remaining(tat: tat, now: now), resetMicros: gcra.resetMicros(tat: tat, now: now)))
        case .charge:
            let newTAT = gcra.charge(tat: tat, now: now, cost: cost)
            return (newTAT, .allowed(remaining: gcra.remaining(tat: newTAT, now: now), resetMicros: gcra.resetMicros(tat: newTAT, now: now)))
        }
    }

    @Test(.enabled(if: RedisServer.available))
    func theScriptsDoGCRAsArithmeticStepForStep() async throws {
        try await RedisServer.with { server in
            let connection = try await server.connect()
            let scripts: [Operation: RedisScript] = [
                .take: Self.onTestClock(RedisLimitScripts.take), .check: Self.onTestClock(RedisLimitScripts.check),
                .charge: Self.onTestClock(RedisLimitScripts.charge),
            ]
            var random = SystemRandomNumberGenerator()
            for (index, gcra) in [GCRA(rate: 10), GCRA(rate: 1), GCRA(rate: 1000), GCRA(rate: 7, periodMicros: 1_000_000)].enumerated() {
                let key = RedisLimitKeys.tokens(UInt64(index + 1))
                var tat: UInt64?
                var now: UInt64 = 1_700_000_000_000_000 + UInt64.random(in: 0..<1_000_000, using: &random)
                for _ in 0..<150 {
                    now += UInt64.random(in: 0...(2 * gcra.emissionInterval), using: &random) / UInt64.random(in: 1...4, using: &random)
                    let operation = Operation.allCases.randomElement(using: &random)!
                    let cost = operation == .charge ? UInt64.random(in: 0...30, using: &random) : UInt64.random(in: 1...3, using: &random)
                    let args = RedisLimitBuckets.args(gcra) + (operation == .check ? [] : [String(cost)]) + [String(now / 1_000_000), String(now % 1_000_000)]
                    let reply = try await connection.evalSHA(script: scripts[operation]!, keys: [key], args: args).get()
                    let expected = Self.model(operation, gcra: gcra, tat: tat, now: now, cost: cost)
                    tat = expected.0
                    #expect(try RedisLimitReply.outcome(reply) == expected.1, "\(operation) cost \(cost) under \(gcra)")
                    let stored = try await connection.send(command: RedisCommand("GET", key)).get()
                    #expect(stored.integer.map(UInt64.init) == tat, "\(operation) cost \(cost) under \(gcra)")
                }
            }
        }
    }

    @Test(.enabled(if: RedisServer.available))
    func concurrentAdmissionsFromSeveralConnectionsAdmitExactlyTheLimit() async throws {
        try await RedisServer.with(threads: 4) { server in
            var buckets: [RedisLimitBuckets] = []
            for _ in 0..<4 { buckets.append(RedisLimitBuckets(connection: try await server.connect())) }
            // An hour's period: no cell comes back while the test runs.
            let limit = 50
            let gcra = GCRA(rate: limit, periodMicros: 3_600_000_000)
            let takes = (0..<(4 * limit)).map { buckets[$0 % buckets.count].take(keyID: 42, gcra: gcra) }
            var remaining: [Int] = []
            var refused = 0
            for take in takes {
                switch try await take.get() {
                case .allowed(let left, _): remaining.append(left)
                case .limited(let retry, _):
                    refused += 1
                    #expect(retry > 0 && retry <= gcra.emissionInterval)
                case .tableFull: Issue.record("Redis has no table to fill")
                }
            }
            #expect(remaining.count == limit && refused == 3 * limit)
            #expect(remaining.sorted() == Array(0..<limit))  // each admission saw its own bucket state

            // The same through the admission script, with a token limit checked.
            let admissions = (0..<(3 * 30)).map {
                buckets[$0 % buckets.count].admit(keyID: 43, requests: GCRA(rate: 30, periodMicros: 3_600_000_000), tokens: GCRA(rate: 1000))
            }
            var admitted = 0
            for admission in admissions {
                let answer = try await admission.get()
                if case .allowed = answer.requests {
                    admitted += 1
                    #expect(answer.tokens == .allowed(remaining: 1000, resetMicros: 0))
                } else {
                    #expect(answer.tokens == nil)
                }
            }
            #expect(admitted == 30)
        }
    }

    @Test(.enabled(if: RedisServer.available))
    func retryAfterIsGCRAs() async throws {
        try await RedisServer.with { server in
            let buckets = RedisLimitBuckets(connection: try await server.connect())
            let gcra = GCRA(rate: 10)  // 6 s apart, a burst of 10
            for left in (0..<10).reversed() {
                guard case .allowed(let remaining, _) = try await buckets.take(keyID: 7, gcra: gcra).get() else {
                    Issue.record("refused within the burst")
                    return
                }
                #expect(remaining == left)
            }
            for cost: UInt64 in [1, 3] {
                guard case .limited(let retry, let reset) = try await buckets.take(keyID: 7, gcra: gcra, cost: cost).get() else {
                    Issue.record("admitted past the burst")
                    return
                }
                // What Swift's GCRA answers for a bucket `reset` ahead of now.
                let now: UInt64 = 5_000_000_000
                #expect(gcra.take(tat: now + reset, now: now, cost: cost) == .deny(retryAfterMicros: retry))
                #expect(retry > 6_000_000 * cost - 1_000_000 && retry <= 6_000_000 * cost)
            }
            // A request refused takes nothing: the next one still waits one interval at most.
            guard case .limited(let retry, _) = try await buckets.take(keyID: 7, gcra: gcra).get() else {
                Issue.record("admitted past the burst")
                return
            }
            #expect(retry <= 6_000_000)
        }
    }

    @Test(.enabled(if: RedisServer.available))
    func tokenDebtBlocksChecksUntilPaidOff() async throws {
        try await RedisServer.with { server in
            let buckets = RedisLimitBuckets(connection: try await server.connect())
            let gcra = GCRA(rate: 10, periodMicros: 1_000_000)  // 100 ms a token, 10 at once
            #expect(try await buckets.check(keyID: 9, gcra: gcra).get() == .allowed(remaining: 10, resetMicros: 0))
            // An answer that cost 13: the bucket is 1.3 s ahead, 0.4 s past the 0.9 s a check allows.
            guard case .allowed(0, let reset) = try await buckets.charge(keyID: 9, gcra: gcra, cost: 13).get() else {
                Issue.record("a charge is always allowed, with nothing left after a debt")
                return
            }
            #expect(reset > 1_200_000 && reset <= 1_300_000)
            guard case .limited(let retry, let checkReset) = try await buckets.check(keyID: 9, gcra: gcra).get() else {
                Issue.record("a bucket in debt admitted")
                return
            }
            #expect(gcra.check(tat: 1_000_000_000 + checkReset, now: 1_000_000_000) == retry)
            #expect(retry > 300_000 && retry <= 400_000)
            // More debt pushes the retry further; the check itself charged nothing.
            _ = try await buckets.charge(keyID: 9, gcra: gcra, cost: 2).get()
            guard case .limited(let later, _) = try await buckets.check(keyID: 9, gcra: gcra).get() else {
                Issue.record("a bucket in debt admitted")
                return
            }
            #expect(later > retry && later <= retry + 200_000)
            try await Task.sleep(for: .microseconds(later + 20_000))
            guard case .allowed = try await buckets.check(keyID: 9, gcra: gcra).get() else {
                Issue.record("the debt was paid off but the bucket still refuses")
                return
            }
        }
    }

    @Test(.enabled(if: RedisServer.available))
    func bucketsExpireOnceFull() async throws {
        try await RedisServer.with { server in
            let connection = try await server.connect()
            let buckets = RedisLimitBuckets(connection: connection)
            func pttl(_ key: String) async throws -> Int64 { try await connection.send(command: RedisCommand("PTTL", key)).get().integer ?? -3 }

            _ = try await buckets.take(keyID: 1, gcra: GCRA(rate: 60)).get()  // full again in 1 s
            let requests = try await pttl(RedisLimitKeys.requests(1))
            #expect(requests > 1000 && requests <= 2000)
            _ = try await buckets.charge(keyID: 1, gcra: GCRA(rate: 60), cost: 120).get()  // 2 minutes of tokens
            let tokens = try await pttl(RedisLimitKeys.tokens(1))
            #expect(tokens > 120_000 && tokens <= 121_000)
            // A check writes nothing; an admission refused writes nothing.
            _ = try await buckets.check(keyID: 2, gcra: GCRA(rate: 60)).get()
            #expect(try await pttl(RedisLimitKeys.tokens(2)) == -2)

            // A bucket full again is gone soon after (its second of margin).
            _ = try await buckets.take(keyID: 3, gcra: GCRA(rate: 10, periodMicros: 1_000_000)).get()
            #expect(try await pttl(RedisLimitKeys.requests(3)) > 0)
            try await Task.sleep(for: .milliseconds(1300))
            #expect(try await pttl(RedisLimitKeys.requests(3)) == -2)
        }
    }
}
