import Atomics

/// A fixed-size, lock-free table of GCRA buckets in the shared segment, keyed by a 64-bit
/// key id, used by every worker at once: limits are exact across processes because each
/// bucket is one 64-bit word updated by compare-and-swap.
///
/// Each entry is two words: `owner` (the key id, 0 = free) and `state` (16-bit tag of the
/// owner | 48-bit TAT in microseconds since the segment's epoch). Every update of `state`
/// checks the tag, so a bucket that changed hands is never charged for its old key.
///
/// Eviction takes only entries that are fully refilled (TAT ≤ now): such a bucket is
/// indistinguishable from a new one, so evicting and later re-creating a key never grants
/// it an extra request. When every candidate entry of a key is held by a key still in
/// use, the request is refused (``Outcome/tableFull``) rather than let through unlimited.
public struct RateLimitTable: Sendable {
    /// Entries per table.
    public static let capacity = 4096
    /// Entries probed for a key before the table counts as full for it.
    public static let probeLength = 32
    static let entrySize = 16
    static let tatMask: UInt64 = (1 << 48) - 1

    let segment: SharedSegment
    let offset: Int

    /// What a take did.
    public enum Outcome: Sendable, Equatable {
        case allowed(remaining: Int, resetMicros: UInt64)
        case limited(retryAfterMicros: UInt64, resetMicros: UInt64)
        /// No entry could be had for this key: every candidate belongs to an active key.
        case tableFull
    }

    static func tag(_ key: UInt64) -> UInt64 { (key >> 48) | 1 }  // never 0: 0 marks a never-used entry
    /// A TAT past what 48 bits hold (a saturated charge) is stored as the largest that fits:
    /// masking it instead would wrap it into the past and wipe the debt.
    static func pack(tag: UInt64, tat: UInt64) -> UInt64 { tag << 48 | min(tat, tatMask) }

    private func owner(_ index: Int) -> UnsafeAtomic<UInt64> { segment.atomic(at: offset + index * Self.entrySize) }
    private func state(_ index: Int) -> UnsafeAtomic<UInt64> { segment.atomic(at: offset + index * Self.entrySize + 8) }

    /// Takes one request (or `cost` cells) for `key` under `gcra`.
    public func take(key: UInt64, gcra: GCRA, now: UInt64, cost: UInt64 = 1) -> Outcome {
        update(key: key, now: now) { tat in
            switch gcra.take(tat: tat, now: now, cost: cost) {
            case .allow(let newTAT):
                return (newTAT, .allowed(remaining: gcra.remaining(tat: newTAT, now: now), resetMicros: gcra.resetMicros(tat: newTAT, now: now)))
            case .deny(let retry):
                return (nil, .limited(retryAfterMicros: retry, resetMicros: gcra.resetMicros(tat: tat, now: now)))
            }
        }
    }

    /// Admits a request while the bucket is not in debt, without charging it.
    public func check(key: UInt64, gcra: GCRA, now: UInt64) -> Outcome {
        update(key: key, now: now) { tat in
            if let retry = gcra.check(tat: tat, now: now) {
                return (nil, .limited(retryAfterMicros: retry, resetMicros: gcra.resetMicros(tat: tat, now: now)))
            }
            return (nil, .allowed(remaining: gcra.remaining(tat: tat, now: now), resetMicros: gcra.resetMicros(tat: tat, now: now)))
        }
    }

    /// Charges `cost` cells after the fact (tokens reported by the upstream).
    @discardableResult
    public func charge(key: UInt64, gcra: GCRA, now: UInt64, cost: UInt64) -> Outcome {
        update(key: key, now: now) { tat in
            let newTAT = gcra.charge(tat: tat, now: now, cost: cost)
            return (newTAT, .allowed(remaining: gcra.remaining(tat: newTAT, now: now), resetMicros: gcra.resetMicros(tat: newTAT, now: now)))
        }
    }

    /// Finds or claims the entry of `key`, then applies `body` to its TAT with CAS until it
    /// sticks. `body` returns the TAT to store (nil = leave it) and the outcome.
    private func update(key rawKey: UInt64, now: UInt64, _ body: (UInt64) -> (UInt64?, Outcome)) -> Outcome {
        let key = rawKey == 0 ? 1 : rawKey
        let tag = Self.tag(key)
        let home = Int(truncatingIfNeeded: key % UInt64(Self.capacity))
        for _ in 0..<64 {
            var claimable: Int?
            var found: Int?
            for probe in 0..<Self.probeLength {
                let index = (home + probe) % Self.capacity
                let holder = owner(index).load(ordering: .acquiring)
                if holder == key {
                    found = index
                    break
                }
                if claimable == nil {
                    let word = state(index).load(ordering: .acquiring)
                    // Free, or fully refilled (an idle bucket equals a fresh one).
                    if holder == 0 || (word & Self.tatMask) <= now { claimable = index }
                }
            }
            if let index = found {
                let word = state(index).load(ordering: .acquiring)
                guard word >> 48 == tag else { continue }  // changing hands right now: look again
                let (newTAT, outcome) = body(word & Self.tatMask)
                guard let newTAT else { return outcome }
                if state(index).compareExchange(expected: word, desired: Self.pack(tag: tag, tat: newTAT), ordering: .acquiringAndReleasing).exchanged {
                    return outcome
                }
                continue
            }
            guard let index = claimable else { return .tableFull }
            let word = state(index).load(ordering: .acquiring)
            let holder = owner(index).load(ordering: .acquiring)
            guard holder == 0 || (word & Self.tatMask) <= now, holder != key else { continue }
            // Claim: the state word first (so the old owner's CAS fails on the tag), then the owner.
            if state(index).compareExchange(expected: word, desired: Self.pack(tag: tag, tat: now), ordering: .acquiringAndReleasing).exchanged {
                owner(index).store(key, ordering: .releasing)
            }
        }
        return .tableFull
    }

    /// Entries currently owned (for tests and the table-size gauge).
    public var occupied: Int {
        (0..<Self.capacity).filter { owner($0).load(ordering: .relaxed) != 0 }.count
    }
}
