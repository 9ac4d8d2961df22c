import Shared
import Testing

@testable import Worker

/// One proxied request's decisions without a socket: failover only before the first byte
/// reaches the client, one retry of a stale kept-alive connection, the last attempt's error
/// passed on, what a hang-up or the drain deadline does in each phase. These cases were
/// covered only end to end (Tests/integration/test_proxy.py) before.
@Suite struct ProxyExchangeStateMachineTests {
    typealias Machine = ProxyExchangeStateMachine

    /// A machine whose first attempt's request is out.
    func sending(attempts: Int = 2, probe: Bool = false) -> Machine {
        var state = Machine(attemptCount: attempts)
        #expect(state.nextAttempt() == .attempt(0))
        state.sending(probe: probe)
        return state
    }

    @Test func aFiveHundredBeforeTheLastAttemptFailsOver() {
        var state = sending()
        #expect(state.head(status: 503, isJSON: true, isEventStream: false) == .failOver)
        #expect(state.attemptEnded() == true, "the failed attempt stops counting in flight")
        #expect(state.nextAttempt() == .attempt(1))
        state.sending(probe: false)
        #expect(state.isLastAttempt)
        #expect(state.head(status: 500, isJSON: true, isEventStream: false) == .whole(status: 500), "the last attempt's error is passed on")
        #expect(state.ended() == .whole(status: 500))
        #expect(state.phase == .done)
    }

    @Test func aStoredResponseNotFoundIsAskedOfTheNextUpstreamThenIsTheGatewaysOwn404() {
        var state = sending()
        #expect(state.head(status: 404, isJSON: true, isEventStream: false) == .whole(status: 404), "404 is an answer elsewhere")
        #expect(!state.notFoundSeen)
        state = sending()
        #expect(state.head(status: 404, isJSON: true, isEventStream: false, notFoundMovesOn: true) == .failOver)
        #expect(state.notFoundSeen)
        _ = state.attemptEnded()
        #expect(state.nextAttempt() == .attempt(1))
        state.sending(probe: false)
        #expect(state.head(status: 404, isJSON: true, isEventStream: false, notFoundMovesOn: true) == .failOver, "no upstream's body stands")
        #expect(state.nextAttempt() == .exhausted)
        #expect(state.notFoundSeen)
    }

    @Test func aStoredResponseSomeUpstreamFindsIsItsAnswer() {
        var state = sending()
        #expect(state.head(status: 404, isJSON: true, isEventStream: false, notFoundMovesOn: true) == .failOver)
        _ = state.nextAttempt()
        state.sending(probe: false)
        #expect(state.head(status: 200, isJSON: true, isEventStream: false, notFoundMovesOn: true) == .whole(status: 200))
        #expect(state.ended() == .whole(status: 200))
    }

    @Test func aStoredResponseAskedOfAFailingLastUpstreamAfterA404IsNotFound() {
        // The last upstream serves no Responses API, or is starting: its 503 does not stand.
        var state = sending()
        #expect(state.head(status: 404, isJSON: true, isEventStream: false, notFoundMovesOn: true) == .failOver)
        _ = state.nextAttempt()
        state.sending(probe: false)
        #expect(state.head(status: 503, isJSON: true, isEventStream: false, notFoundMovesOn: true) == .failOver)
        #expect(state.nextAttempt() == .exhausted)
        #expect(state.notFoundSeen)
        // A lookup no upstream answered at all keeps the last failure's error.
        state = sending()
        #expect(state.head(status: 503, isJSON: true, isEventStream: false, notFoundMovesOn: true) == .failOver)
        _ = state.nextAttempt()
        state.sending(probe: false)
        #expect(state.head(status: 502, isJSON: true, isEventStream: false, notFoundMovesOn: true) == .whole(status: 502))
        #expect(!state.notFoundSeen)
    }

    @Test func aStoredResponseWhoseMakerCannotBeAskedIsNotCalledGone() {
        // The table says upstream 0 made it; it is down, the next one has never seen it.
        var state = ProxyExchangeStateMachine(attemptCount: 2, firstHoldsIt: true)
        #expect(state.nextAttempt() == .attempt(0))
        state.sending(probe: false)
        #expect(state.failed(.unreachable("connection refused")) == .failOver(.unavailable))
        _ = state.attemptEnded()
        #expect(state.nextAttempt() == .attempt(1))
        state.sending(probe: false)
        #expect(state.head(status: 404, isJSON: true, isEventStream: false, notFoundMovesOn: true) == .failOver)
        #expect(state.nextAttempt() == .exhausted)
        #expect(state.notFoundSeen)
        #expect(state.holderFailure == .init(attempt: 0, failure: .unreachable("connection refused")), "its error, not a 404")
        // Its breaker open, or a 5xx, the same.
        state = ProxyExchangeStateMachine(attemptCount: 2, firstHoldsIt: true)
        _ = state.nextAttempt()
        state.rejected(retryAfterSeconds: 7)
        #expect(state.holderFailure?.failure == .breakerOpen(retryAfterSeconds: 7))
        // It answered 404 itself (the response expired there): gone, whatever the others say.
        state = ProxyExchangeStateMachine(attemptCount: 2, firstHoldsIt: true)
        _ = state.nextAttempt()
        state.sending(probe: false)
        #expect(state.head(status: 404, isJSON: true, isEventStream: false, notFoundMovesOn: true) == .failOver)
        _ = state.nextAttempt()
        state.sending(probe: false)
        #expect(state.failed(.timeout) == .failOver(.timeout))
        #expect(state.nextAttempt() == .exhausted)
        #expect(state.notFoundSeen && state.holderFailure == nil)
        // Not known to hold it (the table forgot the id): the others' failures do not count.
        state = ProxyExchangeStateMachine(attemptCount: 2)
        _ = state.nextAttempt()
        state.sending(probe: false)
        _ = state.failed(.unreachable("refused"))
        #expect(state.holderFailure == nil)
    }

    @Test func failuresBeforeTheHeadFailOverWithTheirOutcome() {
        var state = sending(attempts: 4)
        #expect(state.failed(.unreachable("connection refused")) == .failOver(.unavailable))
        #expect(state.lastFailure == .init(attempt: 0, failure: .unreachable("connection refused")))
        _ = state.nextAttempt()
        state.sending(probe: false)
        #expect(state.failed(.timeout) == .failOver(.timeout))
        _ = state.nextAttempt()
        state.sending(probe: false)
        #expect(state.failed(.failed("reset")) == .failOver(.error))
        #expect(state.lastFailure == .init(attempt: 2, failure: .failed))
        _ = state.nextAttempt()
        state.sending(probe: false)
        #expect(state.failed(.timeout) == .failOver(.timeout))
        #expect(state.nextAttempt() == .exhausted)
        #expect(state.lastFailure == .init(attempt: 3, failure: .timeout))
        #expect(state.phase == .done)
        #expect(state.nextAttempt() == .stop, "the error was answered once")
    }

    @Test func aStaleConnectionIsRetriedOnceOnAFreshOne() {
        var state = sending(attempts: 1)
        #expect(state.failed(.staleConnection) == .retryOnNewConnection)
        #expect(state.attemptEnded() == true)
        state.resending()
        #expect(state.phase == .awaitingHead)
        #expect(state.failed(.staleConnection) == .failOver(.error), "a second stale connection is a failure")
        #expect(state.nextAttempt() == .exhausted)
    }

    @Test func theStaleRetryIsPerAttempt() {
        var state = sending(attempts: 2)
        _ = state.failed(.staleConnection)
        state.resending()
        _ = state.failed(.timeout)
        _ = state.nextAttempt()
        state.sending(probe: false)
        #expect(state.failed(.staleConnection) == .retryOnNewConnection)
    }

    @Test func runningOutOfLocalResourcesStopsWithoutFailover() {
        var state = sending(attempts: 3, probe: true)
        #expect(state.failed(.localResources("too many open files")) == .outOfLocalResources("too many open files"))
        #expect(state.phase == .done)
        #expect(state.releasingProbe() == true, "the probe is released, not judged")
        #expect(state.lastFailure == nil, "nothing counts against the upstream")
    }

    @Test func aBreakerRejectionIsSkippedAndRemembered() {
        var state = Machine(attemptCount: 2)
        _ = state.nextAttempt()
        state.rejected(retryAfterSeconds: 7)
        _ = state.nextAttempt()
        state.rejected(retryAfterSeconds: 3)
        #expect(state.nextAttempt() == .exhausted)
        #expect(state.lastFailure == .init(attempt: 1, failure: .breakerOpen(retryAfterSeconds: 3)))
        let error = Machine.error(for: .breakerOpen(retryAfterSeconds: 3), upstream: "gpu1")
        #expect(error.status == 503 && error.code == "circuit_open")
        #expect(error.headers.contains { $0 == ("retry-after", "3") })
    }

    @Test func onceTheStreamStartedAFailureEndsItInsteadOfFailingOver() {
        var state = sending()
        #expect(state.head(status: 200, isJSON: false, isEventStream: true) == .stream)
        #expect(state.failed(.timeout) == .brokeOffStream)
        #expect(state.phase == .done)
        #expect(state.failed(.failed("late")) == .ignore)
        #expect(state.nextAttempt() == .stop, "no attempt after the client got bytes")
    }

    @Test func aWholeAnswerThatBreaksOffIsA502() {
        var state = sending()
        #expect(state.head(status: 200, isJSON: true, isEventStream: false) == .whole(status: 200))
        #expect(state.failed(.failed("reset")) == .brokeOffWhole(countUnhealthy: true))

        var error = sending(attempts: 1)
        _ = error.head(status: 502, isJSON: true, isEventStream: false)
        #expect(error.failed(.failed("reset")) == .brokeOffWhole(countUnhealthy: false), "its 5xx head was counted already")
    }

    @Test func onlyJSONOrASuccessfulStreamIsPassedOn() {
        var html = sending(attempts: 1)
        #expect(html.head(status: 200, isJSON: false, isEventStream: false) == .refuse)
        var errorStream = sending(attempts: 1)
        #expect(errorStream.head(status: 400, isJSON: false, isEventStream: true) == .refuse)
        var errorJSON = sending(attempts: 1)
        #expect(errorJSON.head(status: 400, isJSON: true, isEventStream: false) == .whole(status: 400))
        var jsonStream = sending(attempts: 1)
        #expect(jsonStream.head(status: 200, isJSON: true, isEventStream: true) == .stream)
    }

    @Test func theHeadJudgesTheProbe() {
        var state = sending(probe: true)
        _ = state.head(status: 200, isJSON: true, isEventStream: false)
        #expect(state.releasingProbe() == false, "judged by the head: nothing to release")
        #expect(Machine.breakerSuccess(status: 499))
        #expect(!Machine.breakerSuccess(status: 500))
    }

    @Test func aStrayHeadOrEndIsIgnoredOrFailed() {
        var state = sending()
        #expect(state.ended() == .noHead, "an end with no head for this request")
        _ = state.head(status: 200, isJSON: true, isEventStream: false)
        #expect(state.head(status: 200, isJSON: true, isEventStream: false) == .ignore)
        _ = state.ended()
        #expect(state.ended() == .ignore)
    }

    @Test(arguments: [
        (Machine.Phase.awaitingHead, Machine.CancelAction.awaitingAnswer),
        (.streaming, .stream),
        (.whole(status: 200), .whole(status: 200)),
    ])
    func aHangUpInEachPhase(phase: Machine.Phase, expected: Machine.CancelAction) {
        var state = sending(probe: true)
        switch phase {
        case .streaming: _ = state.head(status: 200, isJSON: false, isEventStream: true)
        case .whole(let status): _ = state.head(status: status, isJSON: true, isEventStream: false)
        default: break
        }
        #expect(state.clientGone() == expected)
        #expect(state.phase == .done && state.cancelled)
        #expect(state.failed(.timeout) == .ignore, "nothing is answered after the client left")
        #expect(state.nextAttempt() == .stop)
        #expect(state.drainDeadlineReached() == .none)
    }

    @Test func theDrainDeadlineEndsAStreamOrAnswers503() {
        var streaming = sending()
        _ = streaming.head(status: 200, isJSON: false, isEventStream: true)
        #expect(streaming.drainDeadlineReached() == .endStream)
        #expect(streaming.drainDeadlineReached() == .none, "once")

        var waiting = sending()
        #expect(waiting.drainDeadlineReached() == .answer)
        #expect(waiting.clientGone() == .none, "already answered")

        var finished = sending()
        _ = finished.head(status: 200, isJSON: true, isEventStream: false)
        _ = finished.ended()
        #expect(finished.drainDeadlineReached() == .none)
    }

    @Test func theRelayAbortsOnlyAnAnswerUnderWay() {
        var state = sending()
        #expect(state.relayAborted() == false)
        _ = state.head(status: 200, isJSON: false, isEventStream: true)
        #expect(state.relayAborted() == true)
        #expect(state.relayAborted() == false)
        #expect(state.ended() == .ignore)
    }

    @Test func theInFlightCountIsReleasedOnce() {
        var state = sending()
        #expect(state.attemptEnded() == true)
        #expect(state.attemptEnded() == false)
    }

    @Test func eachFailureNamesItsUpstream() {
        #expect(Machine.error(for: .status(503), upstream: "gpu1").message == "Upstream gpu1 answered 503.")
        #expect(Machine.error(for: .timeout, upstream: "gpu1").status == 504)
        #expect(Machine.error(for: .unreachable("refused"), upstream: "gpu1").status == 503)
        #expect(Machine.error(for: .failed, upstream: "gpu1").status == 502)
    }
}
