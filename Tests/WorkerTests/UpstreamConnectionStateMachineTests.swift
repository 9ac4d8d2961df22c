import NIOCore
import Testing

@testable import Worker

/// The upstream connection's transitions, with the time passed in by hand: the upstream
/// timeout (from the request until the final head, then from the last read, not counting
/// time paused for a slow client), stale keep-alive connections, 1xx floods, bytes nobody
/// asked for, reuse and backpressure.
@Suite struct UpstreamConnectionStateMachineTests {
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    static let timeout = TimeAmount.seconds(30)

    static func at(_ seconds: Double) -> NIODeadline { start + .milliseconds(Int64(seconds * 1000)) }

    func sent(reused: Bool = false) -> UpstreamConnectionStateMachine {
        var state = UpstreamConnectionStateMachine()
        state.requestSent(now: Self.at(0), reused: reused)
        return state
    }

    @Test func theTimeoutCountsFromTheRequestUntilTheHead() {
        var state = sent()
        #expect(state.bytesArrived(now: Self.at(20), parserIdle: true) == true)
        #expect(state.timerFired(now: Self.at(25), timeout: Self.timeout) == .rearm(.seconds(5)), "a read before the head does not extend it")
        #expect(state.timerFired(now: Self.at(30), timeout: Self.timeout) == .timedOut)
        #expect(!state.inFlight)
        #expect(state.closed() == nil, "the timed-out request was already failed")
    }

    @Test func informationalHeadsNeitherExtendTheDeadlineNorFlood() {
        var state = sent()
        for second in 1...UpstreamConnectionStateMachine.maxInformational {
            #expect(state.head(status: 100, keepAlive: true, now: Self.at(Double(second))) == .skip)
            #expect(state.end(parserIdle: false, channelActive: true, now: Self.at(Double(second))) == .informationalEnded)
        }
        #expect(state.timerFired(now: Self.at(30), timeout: Self.timeout) == .timedOut, "1xx heads keep the request's deadline")

        var flooded = sent()
        for _ in 1...UpstreamConnectionStateMachine.maxInformational {
            _ = flooded.head(status: 103, keepAlive: true, now: Self.at(1))
            _ = flooded.end(parserIdle: false, channelActive: true, now: Self.at(1))
        }
        #expect(flooded.head(status: 100, keepAlive: true, now: Self.at(1)) == .close)
        #expect(flooded.closed() == .failed("more than 8 informational (1xx) answers"))
    }

    @Test func afterTheHeadTheTimeoutCountsFromTheLastRead() {
        var state = sent()
        #expect(state.head(status: 200, keepAlive: true, now: Self.at(10)) == .deliver)
        #expect(state.bytesArrived(now: Self.at(35), parserIdle: false) == true)
        #expect(state.timerFired(now: Self.at(40), timeout: Self.timeout) == .rearm(.seconds(25)))
        #expect(state.timerFired(now: Self.at(65), timeout: Self.timeout) == .timedOut)
    }

    @Test func timePausedForASlowClientDoesNotCount() {
        var state = sent()
        _ = state.head(status: 200, keepAlive: true, now: Self.at(1))
        state.pause()
        #expect(state.readRequested() == false, "reading is held while paused")
        #expect(state.timerFired(now: Self.at(100), timeout: Self.timeout) == .rearm(Self.timeout), "paused: counts from now")
        #expect(state.resumed(now: Self.at(200)) == true, "the held read is issued on resume")
        #expect(state.resumed(now: Self.at(201)) == false, "once")
        #expect(state.timerFired(now: Self.at(220), timeout: Self.timeout) == .rearm(.seconds(10)))
        #expect(state.timerFired(now: Self.at(230), timeout: Self.timeout) == .timedOut)
    }

    @Test func resumingWithoutAHeldReadIssuesNone() {
        var state = sent()
        state.pause()
        #expect(state.resumed(now: Self.at(1)) == false)
        #expect(state.readRequested() == true)
    }

    @Test func anIdleConnectionLetsItsTimerLapse() {
        var state = UpstreamConnectionStateMachine()
        #expect(state.timerFired(now: Self.at(1000), timeout: Self.timeout) == .lapse)
        var answered = sent()
        _ = answered.head(status: 200, keepAlive: true, now: Self.at(1))
        _ = answered.end(parserIdle: true, channelActive: true, now: Self.at(1))
        #expect(answered.timerFired(now: Self.at(1000), timeout: Self.timeout) == .lapse)
    }

    @Test func aReusedConnectionClosedBeforeAnyByteIsStale() {
        var reused = sent(reused: true)
        #expect(reused.closed() == .staleConnection)

        var fresh = sent(reused: false)
        #expect(fresh.closed() == .failed("connection closed by the upstream"), "a fresh connection is never stale")

        var answering = sent(reused: true)
        _ = answering.head(status: 200, keepAlive: true, now: Self.at(1))
        #expect(answering.closed() == .failed("connection closed by the upstream"), "bytes came: not stale")

        var broken = sent(reused: true)
        _ = broken.head(status: 200, keepAlive: true, now: Self.at(1))
        broken.failing(because: "connection reset")
        #expect(broken.closed() == .failed("connection reset"))
    }

    @Test func anAnswerEndsIntoReuseOnlyWhenEverythingAllows() {
        func ending(keepAlive: Bool, parserIdle: Bool, channelActive: Bool) -> UpstreamConnectionStateMachine.EndAction {
            var state = sent()
            _ = state.head(status: 200, keepAlive: keepAlive, now: Self.at(1))
            return state.end(parserIdle: parserIdle, channelActive: channelActive, now: Self.at(2))
        }
        #expect(ending(keepAlive: true, parserIdle: true, channelActive: true) == .ended(deliver: true, reuse: true, read: false))
        #expect(ending(keepAlive: false, parserIdle: true, channelActive: true) == .ended(deliver: true, reuse: false, read: false))
        #expect(
            ending(keepAlive: true, parserIdle: false, channelActive: true) == .ended(deliver: true, reuse: false, read: false),
            "bytes behind the end: never reused")
        #expect(ending(keepAlive: true, parserIdle: true, channelActive: false) == .ended(deliver: true, reuse: false, read: false))
    }

    @Test func anAbandonedAnswerIsNotDeliveredNorReused() {
        var state = sent()
        _ = state.head(status: 200, keepAlive: true, now: Self.at(1))
        state.abandoned()
        #expect(state.end(parserIdle: true, channelActive: true, now: Self.at(2)) == .ended(deliver: false, reuse: false, read: false))
        #expect(state.closed() == nil)
    }

    @Test func anAnswerEndingWhilePausedIssuesTheHeldRead() {
        var state = sent()
        _ = state.head(status: 200, keepAlive: true, now: Self.at(1))
        state.pause()
        _ = state.readRequested()
        #expect(state.end(parserIdle: true, channelActive: true, now: Self.at(2)) == .ended(deliver: true, reuse: true, read: true))
        #expect(!state.paused, "an idle connection keeps reading, to notice the upstream closing it")
    }

    @Test func bytesNobodyAskedForAreRefused() {
        var idle = UpstreamConnectionStateMachine()
        #expect(idle.bytesArrived(now: Self.at(1), parserIdle: true) == false)
        #expect(idle.closeReason == "the upstream sent bytes no request asked for")

        var afterAnswer = sent()
        _ = afterAnswer.head(status: 200, keepAlive: true, now: Self.at(1))
        _ = afterAnswer.end(parserIdle: false, channelActive: true, now: Self.at(1))
        #expect(afterAnswer.head(status: 200, keepAlive: true, now: Self.at(1)) == .unsolicited, "a stray answer behind the one that ended")

        var midAnswer = UpstreamConnectionStateMachine()
        #expect(midAnswer.bytesArrived(now: Self.at(1), parserIdle: false) == true, "the rest of a half-read answer is read (and dropped)")
    }

    @Test func aNewRequestStartsFromAFreshState() {
        var state = sent(reused: false)
        _ = state.head(status: 100, keepAlive: true, now: Self.at(1))
        _ = state.end(parserIdle: false, channelActive: true, now: Self.at(1))
        _ = state.head(status: 200, keepAlive: false, now: Self.at(2))
        _ = state.end(parserIdle: true, channelActive: true, now: Self.at(2))
        state.requestSent(now: Self.at(100), reused: true)
        #expect(state.inFlight)
        #expect(state.closed() == .staleConnection, "no byte of this answer yet, on a reused connection")
    }
}

/// An upload's body is written piece by piece after its head.
@Suite struct UpstreamUploadTests {
    typealias T = UpstreamConnectionStateMachineTests

    @Test func theTimeoutCountsFromTheUploadsLastPiece() {
        var state = UpstreamConnectionStateMachine()
        state.requestSent(now: T.at(0), reused: false)
        state.uploadStarted()
        state.bodyWritten(now: T.at(25))
        #expect(state.timerFired(now: T.at(40), timeout: T.timeout) == .rearm(.seconds(15)))
        state.bodyEnded(now: T.at(50))
        #expect(state.timerFired(now: T.at(70), timeout: T.timeout) == .rearm(.seconds(10)))
        #expect(state.timerFired(now: T.at(80), timeout: T.timeout) == .timedOut)
    }

    @Test func anAnswerBeforeTheUploadEndedLeavesTheConnectionUnused() {
        var state = UpstreamConnectionStateMachine()
        state.requestSent(now: T.at(0), reused: false)
        state.uploadStarted()
        #expect(state.head(status: 400, keepAlive: true, now: T.at(1)) == .deliver)
        #expect(state.end(parserIdle: true, channelActive: true, now: T.at(1)) == .ended(deliver: true, reuse: false, read: false))

        var finished = UpstreamConnectionStateMachine()
        finished.requestSent(now: T.at(0), reused: false)
        finished.uploadStarted()
        finished.bodyEnded(now: T.at(1))
        #expect(finished.head(status: 200, keepAlive: true, now: T.at(2)) == .deliver)
        #expect(finished.end(parserIdle: true, channelActive: true, now: T.at(2)) == .ended(deliver: true, reuse: true, read: false))
    }
}
