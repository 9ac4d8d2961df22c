import Atomics

/// One worker's metrics area in the segment. Only its worker writes it; any process reads
/// it. Areas belong to slots, not to processes: a replacement worker continues its slot's
/// counters, so totals summed over the slots ever used never go down when workers die.
public struct MetricsArea: Sendable {
    let segment: SharedSegment
    let offset: Int

    func word(_ index: Int) -> UnsafeAtomic<UInt64> { segment.atomic(at: offset + index * 8) }

    /// Adds `value` to the counter at `index`.
    func add(_ index: Int, _ value: UInt64 = 1) { word(index).wrappingIncrement(by: value, ordering: .relaxed) }

    /// Sets the gauge word at `index` (only its worker writes it).
    func set(_ index: Int, _ value: UInt64) { word(index).store(value, ordering: .relaxed) }

    /// One share (0 to 1) in a histogram over ``MetricsLayout/matchBuckets``; its sum in millionths.
    func observe(shareHistogram base: Int, share: Double) {
        let share = min(1, max(0, share))
        add(base + (MetricsLayout.matchBuckets.firstIndex { share <= $0 } ?? MetricsLayout.matchBuckets.count))
        add(base + MetricsLayout.matchBuckets.count + 1, UInt64((share * 1e6).rounded()))
        add(base + MetricsLayout.matchBuckets.count + 2)
    }

    /// Records `seconds` in the histogram starting at `base`, over `bounds`; its sum in ns.
    func observe(histogram base: Int, seconds: Double, bounds: [Double] = MetricsLayout.durationBuckets) {
        add(base + (bounds.firstIndex { seconds <= $0 } ?? bounds.count))
        add(base + bounds.count + 1, UInt64(max(0, seconds) * 1e9))
        add(base + bounds.count + 2)
    }
}

extension SharedSegment {
    /// The metrics area of worker slot `slot`.
    public func metricsArea(slot: Int) -> MetricsArea {
        precondition((0..<SegmentLayout.maxWorkers).contains(slot), "slot out of range")
        return MetricsArea(segment: self, offset: SegmentLayout.metricsOffset + slot * SegmentLayout.metricsAreaSize)
    }

    /// Every slot's counters summed, word by word.
    public func metricTotals() -> [UInt64] {
        var totals = [UInt64](repeating: 0, count: MetricsLayout.words)
        // Only slots a worker ever had (an unauthenticated /metrics summed all 128 areas:
        // 420 µs a scrape); a dead worker's counters stay in its slot, which stays counted.
        for slot in 0..<slotsUsed {
            let area = metricsArea(slot: slot)
            for index in 0..<MetricsLayout.words {
                let value = area.word(index).load(ordering: .relaxed)
                if value != 0 { totals[index] &+= value }
            }
        }
        return totals
    }
}
