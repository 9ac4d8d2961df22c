import Atomics

/// One upstream's circuit breaker as a value packed into a 64-bit word, so every worker
/// shares one breaker through compare-and-swap on the segment:
/// bits 62–63 phase, 48–61 consecutive failures, 0–47 a time in microseconds (when it
/// opened, or when the half-open probe started).
///
/// Closed: everything goes through; `threshold` failures in a row open it. Open: requests
/// fail fast until `cooldown` has passed; then exactly one request (across all workers)
/// becomes the half-open probe. The probe's success closes it, its failure opens it again.
/// A probe that never reports (its worker died) is replaced after `probeTimeout`.
public struct CircuitBreakerState: Sendable, Equatable {
    public enum Phase: UInt64, Sendable {
        case closed = 0
        case halfOpen = 1
        case open = 2
    }

    /// What to do with a request.
    public enum Admission: Sendable, Equatable {
        case allow
        /// Allowed as the single half-open probe.
        case probe
        case reject(retryAfterMicros: UInt64)
    }

    public var phase: Phase
    public var failures: UInt64
    public var since: UInt64

    static let timeMask: UInt64 = (1 << 48) - 1
    static let failureMask: UInt64 = (1 << 14) - 1

    public init(phase: Phase = .closed, failures: UInt64 = 0, since: UInt64 = 0) {
        self.phase = phase
        self.failures = min(failures, Self.failureMask)
        self.since = since & Self.timeMask
    }

    public init(word: UInt64) {
        self.init(phase: Phase(rawValue: word >> 62) ?? .closed, failures: (word >> 48) & Self.failureMask, since: word & Self.timeMask)
    }

    public var word: UInt64 { phase.rawValue << 62 | (failures & Self.failureMask) << 48 | (since & Self.timeMask) }

    /// The admission decision and the state to store (nil = unchanged).
    public func admit(now: UInt64, cooldown: UInt64, probeTimeout: UInt64) -> (Admission, CircuitBreakerState?) {
        switch phase {
        case .closed:
            return (.allow, nil)
        case .open:
            let elapsed = now > since ? now - since : 0
            if elapsed < cooldown { return (.reject(retryAfterMicros: cooldown - elapsed), nil) }
            return (.probe, CircuitBreakerState(phase: .halfOpen, failures: failures, since: now))
        case .halfOpen:
            let elapsed = now > since ? now - since : 0
            if elapsed > probeTimeout { return (.probe, CircuitBreakerState(phase: .halfOpen, failures: failures, since: now)) }
            return (.reject(retryAfterMicros: max(1_000_000, cooldown / 2)), nil)
        }
    }

    /// After a successful upstream answer: closed, failure count cleared.
    public func recordingSuccess() -> CircuitBreakerState {
        phase == .closed && failures == 0 ? self : CircuitBreakerState()
    }

    /// After a failed upstream attempt.
    public func recordingFailure(now: UInt64, threshold: UInt64) -> CircuitBreakerState {
        switch phase {
        case .closed:
            let count = failures + 1
            return count >= threshold
                ? CircuitBreakerState(phase: .open, failures: count, since: now) : CircuitBreakerState(phase: .closed, failures: count, since: since)
        case .halfOpen:
            return CircuitBreakerState(phase: .open, failures: failures + 1, since: now)
        case .open:
            return self
        }
    }

    /// The half-open probe ended without an answer to judge by (its client left before the
    /// upstream's head, or the gateway itself could not send it): open again with the
    /// cooldown already over, so the next request becomes the probe at once instead of
    /// every request waiting out the probe timeout.
    public func releasingProbe() -> CircuitBreakerState? {
        phase == .halfOpen ? CircuitBreakerState(phase: .open, failures: failures, since: 0) : nil
    }

    /// A health check passed: a half-open breaker closes (its probe may never report, and
    /// the upstream answers); an open one waits out its cooldown as before.
    public func closingAfterHealthyCheck() -> CircuitBreakerState? {
        phase == .halfOpen ? CircuitBreakerState() : nil
    }

    /// Opened by a failed health check.
    public func opening(now: UInt64) -> CircuitBreakerState {
        phase == .open ? self : CircuitBreakerState(phase: .open, failures: failures, since: now)
    }
}

extension UpstreamStatus {
    private var breakerWord: UnsafeAtomicWord { segment.atomic(at: offset + SegmentLayout.Upstream.breaker.rawValue) }

    /// The breaker as last stored.
    public var breaker: CircuitBreakerState { CircuitBreakerState(word: breakerWord.load(ordering: .acquiring)) }

    /// Applies `transition` with compare-and-swap until it sticks; returns what it decided.
    @discardableResult
    public func updateBreaker<R>(_ transition: (CircuitBreakerState) -> (R, CircuitBreakerState?)) -> R {
        while true {
            let word = breakerWord.load(ordering: .acquiring)
            let (result, next) = transition(CircuitBreakerState(word: word))
            guard let next, next.word != word else { return result }
            if breakerWord.compareExchange(expected: word, desired: next.word, ordering: .acquiringAndReleasing).exchanged {
                return result
            }
        }
    }
}

typealias UnsafeAtomicWord = UnsafeAtomic<UInt64>
