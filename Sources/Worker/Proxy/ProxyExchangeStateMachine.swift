import Shared

/// The decisions of one proxied request as a value: which planned attempt comes next,
/// when to fail over (only while nothing has reached the client), when a stale kept-alive
/// connection is retried, what a failure, a hang-up or the drain deadline means in each
/// phase, and which error the client gets when every attempt failed. ``ProxyExchange``
/// feeds it what happens (breaker verdicts, the upstream's head, end and failures, the
/// client's hang-up) and performs what it answers: the breaker and metric updates, the
/// connection, the relay and the response. Nothing here does I/O or reads a clock.
struct ProxyExchangeStateMachine {
    enum Phase: Equatable {
        /// Between attempts (or before the first).
        case idle
        /// An attempt's request is out; no head yet. Failover is still possible.
        case awaitingHead
        /// A non-streamed answer is being collected.
        case whole(status: Int)
        /// An event stream is being relayed.
        case streaming
        /// The client has (or is getting) its answer; nothing more happens.
        case done
    }

    /// Why an attempt failed, for the error the client gets if it was the last one.
    enum AttemptFailure: Equatable {
        case breakerOpen(retryAfterSeconds: Int)
        case status(Int)
        case unreachable(String)
        case timeout
        case failed
    }

    struct RecordedFailure: Equatable {
        var attempt: Int
        var failure: AttemptFailure
    }

    let attemptCount: Int
    private(set) var phase = Phase.idle
    /// The attempt under way (or the last one tried).
    private(set) var current: Int?
    private var next = 0
    private var retriedStaleConnection = false
    /// The client went away or the drain deadline ended the request.
    private(set) var cancelled = false
    /// This attempt is its upstream's half-open breaker probe, not yet judged.
    private var probing = false
    /// This attempt counts as in flight on its upstream (the shared load view).
    private var countedInFlight = false
    /// Why the last failed attempt failed; nil while none has.
    private(set) var lastFailure: RecordedFailure?
    /// An upstream answered 404 for the stored response asked of it: when no attempt finds
    /// it, it is not there (whatever the others' failures), unless the upstream that made it
    /// could not be asked (``holderFailure``).
    private(set) var notFoundSeen = false
    /// The first attempt goes to the upstream known to hold the stored response asked for
    /// (the shared table of response ids says it made it).
    private let firstHoldsIt: Bool
    /// How that upstream failed without answering (down, its breaker open, a 5xx): then the
    /// others' 404s do not mean the response is gone, and the client gets this failure's
    /// error (a 502 or 503 to retry), not a 404.
    private(set) var holderFailure: RecordedFailure?

    init(attemptCount: Int, firstHoldsIt: Bool = false) {
        self.attemptCount = attemptCount
        self.firstHoldsIt = firstHoldsIt
    }

    /// Records why the current attempt failed.
    private mutating func record(_ failure: AttemptFailure, attempt: Int) {
        lastFailure = RecordedFailure(attempt: attempt, failure: failure)
        if firstHoldsIt && attempt == 0 && failure != .status(404) { holderFailure = lastFailure }
    }

    /// This attempt is the plan's last: its error answer is passed on, not failed over.
    var isLastAttempt: Bool { next == attemptCount }

    // MARK: Attempts

    enum NextStep: Equatable {
        /// Try attempt `n`: ask its breaker, then say ``sending(probe:)`` or ``rejected(retryAfterSeconds:)``.
        case attempt(Int)
        /// No attempt is left: answer with the error of ``lastFailure`` (or "no upstream").
        case exhausted
        /// The request was cancelled or already answered: nothing more to do.
        case stop
    }

    mutating func nextAttempt() -> NextStep {
        guard !cancelled, phase != .done else { return .stop }
        guard next < attemptCount else {
            phase = .done
            return .exhausted
        }
        current = next
        next += 1
        retriedStaleConnection = false
        return .attempt(next - 1)
    }

    /// The attempt's breaker is open: it is skipped.
    mutating func rejected(retryAfterSeconds: Int) {
        guard let current else { return }
        record(.breakerOpen(retryAfterSeconds: retryAfterSeconds), attempt: current)
    }

    /// No further attempt can be made (an upload that is no longer kept): the client gets
    /// the last failure's error.
    mutating func gaveUp() { phase = .done }

    /// The attempt goes to the built-in demo model, which answers at once.
    mutating func servedByDemo() { phase = .done }

    /// The attempt's request is being sent (the breaker let it through, as its probe or not).
    mutating func sending(probe: Bool) {
        probing = probe
        resending()
    }

    /// The attempt's request is being sent again, on a fresh connection (after
    /// ``FailureAction/retryOnNewConnection``, once the failed try was ended).
    mutating func resending() {
        countedInFlight = true
        phase = .awaitingHead
    }

    /// The attempt is over. True when it counted as in flight on its upstream, which must
    /// now be told it ended.
    mutating func attemptEnded() -> Bool {
        defer { countedInFlight = false }
        return countedInFlight
    }

    /// The probe this attempt held ends unjudged. True when the breaker must hear it (so
    /// that the next request may probe at once, not after the probe timeout).
    mutating func releasingProbe() -> Bool {
        defer { probing = false }
        return probing
    }

    // MARK: The upstream's answer

    enum HeadAction: Equatable {
        /// Not waiting for a head (a late or stray one): nothing.
        case ignore
        /// A 5xx before the last attempt: abandon this one, try the next.
        case failOver
        /// A content type this route never passes on (HTML, text): a 502 instead.
        case refuse
        /// A successful event stream: relay it event by event.
        case stream
        /// A JSON answer (success or error): collect it whole.
        case whole(status: Int)
    }

    /// The answer's head. `isJSON` / `isEventStream`: what its content type is. The breaker
    /// hears of the head at once (not when a long stream ends): a 5xx is a failure, anything
    /// else a success — see ``breakerSuccess(status:)``.
    /// - Parameter notFoundMovesOn: a 404 also moves on to the next attempt (a stored
    ///   response asked of every upstream that may hold it). Once one said 404, the last
    ///   attempt's 404 or 5xx moves on too: the plan ends ``exhausted`` with
    ///   ``notFoundSeen`` set, and the client gets the gateway's own 404, not the body of
    ///   whichever upstream came last (one that serves no Responses API, or is starting).
    mutating func head(status: Int, isJSON: Bool, isEventStream: Bool, notFoundMovesOn: Bool = false) -> HeadAction {
        guard case .awaitingHead = phase, let current else { return .ignore }
        probing = false  // judged, either way
        if notFoundMovesOn && status == 404 { notFoundSeen = true }
        let unanswered = status >= 500 || (notFoundMovesOn && status == 404)
        if unanswered && (!isLastAttempt || (notFoundMovesOn && notFoundSeen)) {
            record(.status(status), attempt: current)
            phase = .idle
            return .failOver
        }
        let isSuccess = (200..<300).contains(status)
        // Only JSON (or, for a success, an event stream) is passed on: an upstream's HTML
        // or text is never relayed under the gateway's name.
        guard (isSuccess && isEventStream) || isJSON else {
            phase = .done
            return .refuse
        }
        // An event stream is relayed as one whatever the request said: vLLM may read a
        // `stream` value as true where the gateway did not (and its usage must be counted).
        if isSuccess && isEventStream {
            phase = .streaming
            return .stream
        }
        phase = .whole(status: status)
        return .whole(status: status)
    }

    /// What a head with this status tells the upstream's breaker.
    static func breakerSuccess(status: Int) -> Bool { status < 500 }

    enum EndAction: Equatable {
        case ignore
        /// The whole answer is in: send it on.
        case whole(status: Int)
        /// The stream ended: flush what is held back and end it.
        case stream
        /// An answer ended that never had a head for this request (the tail of a stray answer
        /// on a reused connection): a failure, and the client must still get an answer.
        case noHead
    }

    mutating func ended() -> EndAction {
        switch phase {
        case .whole(let status):
            phase = .done
            return .whole(status: status)
        case .streaming:
            phase = .done
            return .stream
        case .awaitingHead:
            return .noHead
        case .idle, .done:
            return .ignore
        }
    }

    enum FailureAction: Equatable {
        case ignore
        /// A kept-alive connection was stale: send again on a fresh one (once per attempt).
        case retryOnNewConnection
        /// This host is out of descriptors or ports: nothing the upstream did, and no other
        /// upstream would fare better; answer 503 now, tell no breaker.
        case outOfLocalResources(String)
        /// Before the head: count it against the upstream and try the next attempt.
        case failOver(MetricsLayout.Outcome)
        /// A collected answer broke off: 502; `countUnhealthy` when its head was no 5xx
        /// (already counted).
        case brokeOffWhole(countUnhealthy: Bool)
        /// A relayed stream broke off: end it the way SDKs understand.
        case brokeOffStream
    }

    mutating func failed(_ failure: UpstreamFailure) -> FailureAction {
        guard !cancelled, let current else { return .ignore }
        switch phase {
        case .awaitingHead:
            if failure == .staleConnection, !retriedStaleConnection {
                retriedStaleConnection = true
                return .retryOnNewConnection
            }
            if case .localResources(let why) = failure {
                phase = .done
                return .outOfLocalResources(why)
            }
            probing = false  // judged: a failure
            phase = .idle
            let (recorded, outcome): (AttemptFailure, MetricsLayout.Outcome) =
                switch failure {
                case .unreachable(let why): (.unreachable(why), .unavailable)
                case .timeout: (.timeout, .timeout)
                case .failed, .staleConnection, .localResources: (.failed, .error)
                }
            record(recorded, attempt: current)
            return .failOver(outcome)
        case .whole(let status):
            phase = .done
            return .brokeOffWhole(countUnhealthy: status < 500)
        case .streaming:
            phase = .done
            return .brokeOffStream
        case .idle, .done:
            return .ignore
        }
    }

    /// The relay gave up on the answer under way (larger than allowed, an event too long).
    /// True when one was under way (and the phase is now done).
    mutating func relayAborted() -> Bool {
        switch phase {
        case .whole, .streaming:
            phase = .done
            return true
        case .idle, .awaitingHead, .done:
            return false
        }
    }

    // MARK: The end of the request

    enum CancelAction: Equatable {
        case none
        /// A stream was under way: charge what was streamed, count the upstream healthy.
        case stream
        /// A whole answer was being collected.
        case whole(status: Int)
        /// No answer had started: release the probe this attempt held, if any.
        case awaitingAnswer
    }

    /// The client hung up.
    mutating func clientGone() -> CancelAction {
        cancelled = true
        defer { phase = .done }
        switch phase {
        case .streaming: return .stream
        case .whole(let status): return .whole(status: status)
        case .idle, .awaitingHead: return .awaitingAnswer
        case .done: return .none
        }
    }

    enum DrainAction: Equatable {
        case none
        /// End the stream with an error event and `[DONE]`.
        case endStream
        /// Answer 503 (releasing a probe this attempt held).
        case answer
    }

    /// The worker's drain timeout ended the request.
    mutating func drainDeadlineReached() -> DrainAction {
        guard !cancelled else { return .none }
        cancelled = true
        switch phase {
        case .streaming:
            phase = .done
            return .endStream
        case .idle, .awaitingHead, .whole:
            phase = .done
            return .answer
        case .done:
            return .none
        }
    }

    // MARK: Errors

    /// The error the client gets for a failed attempt at the upstream named `upstream`.
    static func error(for failure: AttemptFailure, upstream: String) -> GatewayError {
        switch failure {
        case .breakerOpen(let retryAfter):
            .unavailable("Upstream \(upstream) is failing; its circuit breaker is open.", retryAfterSeconds: retryAfter, code: "circuit_open")
        case .status(let status):
            .badGateway("Upstream \(upstream) answered \(status).")
        case .unreachable(let why):
            .unavailable("Upstream \(upstream) is unreachable (\(why)).", retryAfterSeconds: 2)
        case .timeout:
            .gatewayTimeout("Upstream \(upstream) did not answer in time.")
        case .failed:
            .badGateway("Upstream \(upstream) failed before answering.")
        }
    }
}
