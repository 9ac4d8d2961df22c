import Testing

@testable import Shared

@Suite struct RequestLimiterTests {
    /// `x-ratelimit-reset-*` as the Double arithmetic it replaced printed it.
    static func reference(_ micros: UInt64) -> String {
        let seconds = Double(micros) / 1e6
        if seconds < 60 {
            let rounded = (seconds * 1000).rounded() / 1000
            return rounded == rounded.rounded() ? "\(Int(rounded))s" : "\(rounded)s"
        }
        let whole = Int(seconds)
        return "\(whole / 60)m\(whole % 60)s"
    }

    @Test(
        arguments: [
            0, 1, 499, 500, 501, 999, 1000, 6_000, 100_000, 120_000, 499_999, 500_000, 999_499, 999_500, 1_000_000, 1_234_567,
            59_999_499, 59_999_500, 59_999_999, 60_000_000, 359_999_999, 360_000_000, 3_600_000_000,
        ] as [UInt64])
    func theResetReadsAsBefore(micros: UInt64) {
        #expect(RequestLimiter.duration(micros) == Self.reference(micros))
    }

    @Test func theResetMatchesAcrossTheFirstMinute() {
        var random = SplitMix64(seed: 11)
        for _ in 0..<20_000 {
            let micros = random.next() % 61_000_000
            #expect(RequestLimiter.duration(micros) == Self.reference(micros), "\(micros)")
        }
    }
}
