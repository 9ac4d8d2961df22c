import NIOConcurrencyHelpers
import Shared

/// The last `/metrics` text of one worker, served again while nothing it reports has
/// changed but the scrapes themselves, for at most ``maxAge`` seconds.
///
/// `/metrics` takes no key, and rendering costs ~180 µs of a worker's loop: a client asking
/// in a loop would spend the loop on it. Each render is keyed by a fingerprint of every
/// counter and gauge except the counters of `/metrics` itself (which every scrape moves):
/// any request elsewhere, any breaker or health change, changes it, so what a scrape reports
/// is never older than the last change; only the `/metrics` route's own counts may lag, by
/// at most ``maxAge``.
final class ExpositionCache: Sendable {
    static let maxAge: UInt64 = 1_000_000_000  // nanoseconds

    private struct Entry {
        var fingerprint: UInt64
        var rendered: String
        var at: UInt64
    }

    private let exposition: PrometheusExposition
    private let last = NIOLockedValueBox<Entry?>(nil)

    init(exposition: PrometheusExposition) {
        self.exposition = exposition
    }

    /// The exposition text of `segment` at `now` (monotonic nanoseconds).
    func text(segment: SharedSegment, now: UInt64 = MonotonicInstant.now().nanoseconds) -> String {
        let totals = segment.metricTotals()
        let fingerprint = exposition.fingerprint(totals: totals, segment: segment)
        if let entry = last.withLockedValue({ $0 }), entry.fingerprint == fingerprint, now &- entry.at < Self.maxAge {
            return entry.rendered
        }
        let rendered = exposition.render(totals: totals, segment: segment)
        last.withLockedValue { $0 = Entry(fingerprint: fingerprint, rendered: rendered, at: now) }
        return rendered
    }
}
