import NIOCore
import Testing

@testable import Redis

/// Replies matched in order, deadlines each command's own, late replies dropped in turn.
@Suite struct RedisPipelineStateMachineTests {
    static let t0 = NIODeadline.uptimeNanoseconds(1_000)

    @Test func repliesGoToTheOldestCommand() {
        var pipeline = RedisPipelineStateMachine<Int>()
        #expect(pipeline.send(1, deadline: Self.t0) && pipeline.send(2, deadline: Self.t0))
        guard case .deliver(1) = pipeline.replyReceived(), case .deliver(2) = pipeline.replyReceived() else {
            Issue.record("replies out of order")
            return
        }
        guard case .unsolicited = pipeline.replyReceived() else {
            Issue.record("a reply with no command was taken")
            return
        }
    }

    @Test func deadlinesExpireEachCommandAndKeepItsPlace() {
        var pipeline = RedisPipelineStateMachine<Int>()
        _ = pipeline.send(1, deadline: Self.t0 + .milliseconds(25))
        _ = pipeline.send(2, deadline: Self.t0 + .milliseconds(5))
        _ = pipeline.send(3, deadline: Self.t0 + .milliseconds(30))
        #expect(pipeline.nextDeadline == Self.t0 + .milliseconds(5))
        #expect(pipeline.deadlinesPassed(now: Self.t0 + .milliseconds(4)).isEmpty)
        #expect(pipeline.deadlinesPassed(now: Self.t0 + .milliseconds(25)) == [1, 2])
        #expect(pipeline.nextDeadline == Self.t0 + .milliseconds(30))
        #expect(pipeline.count == 3)
        guard case .drop = pipeline.replyReceived(), case .drop = pipeline.replyReceived(), case .deliver(3) = pipeline.replyReceived() else {
            Issue.record("late replies not dropped in turn")
            return
        }
        #expect(pipeline.nextDeadline == nil)
    }

    @Test func closingHandsBackEveryWaiterAndRefusesMore() {
        var pipeline = RedisPipelineStateMachine<Int>()
        _ = pipeline.send(1, deadline: Self.t0)
        _ = pipeline.send(2, deadline: Self.t0 + .seconds(1))
        _ = pipeline.deadlinesPassed(now: Self.t0)
        #expect(pipeline.closed() == [2])
        #expect(pipeline.count == 0 && pipeline.isClosed)
        #expect(pipeline.send(3, deadline: Self.t0) == false)
    }
}
