import NIOCore

/// Writes commands and hands each reply to the command it answers, pipelined (a command
/// does not wait for the one before it): ``RedisPipelineStateMachine`` keeps the order.
/// A command whose deadline passes fails with ``RedisError/timeout``; a close, or bytes
/// that are not RESP2 (the ``RESPDecoder`` in front of it throws), fail every command left.
/// Loop-bound like its channel.
final class RedisCommandHandler: ChannelInboundHandler {
    typealias InboundIn = RESPValue
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private var pipeline = RedisPipelineStateMachine<EventLoopPromise<RESPValue>>()
    /// Fires at ``timerDeadline``, the earliest deadline when it was set (or earlier than
    /// every deadline now pending: a timer that finds nothing due re-arms itself).
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    /// A flush is scheduled for the end of this event-loop pass: commands sent during one
    /// pass (the requests of one read burst) leave in one write.
    private var flushScheduled = false

    init() {}

    /// Commands written and not yet answered.
    var pendingCount: Int { pipeline.count }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(.connectionClosed)
        self.context = nil
    }

    /// Writes `command`, flushed at the end of this event-loop pass with every other command
    /// sent in it (not even then when `flush` is false: a later send flushes it); `promise`
    /// gets the reply, or fails at `deadline`.
    func send(_ command: RedisCommand, deadline: NIODeadline, promise: EventLoopPromise<RESPValue>, flush: Bool = true) {
        guard let context, context.channel.isActive, pipeline.send(promise, deadline: deadline) else {
            promise.fail(RedisError.connectionClosed)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: command.encodedCapacity)
        command.encode(into: &buffer)
        context.write(wrapOutboundOut(buffer), promise: nil)
        if flush && !flushScheduled {
            flushScheduled = true
            context.eventLoop.assumeIsolated().execute { [self] in
                flushScheduled = false
                self.context?.flush()
            }
        }
        if timerDeadline.map({ deadline < $0 }) ?? true { armTimer(at: deadline, context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let reply = unwrapInboundIn(data)
        switch pipeline.replyReceived() {
        case .deliver(let promise):
            if case .error(let message) = reply {
                promise.fail(RedisError.server(message))
            } else {
                promise.succeed(reply)
            }
        case .drop:
            break
        case .unsolicited:
            failAll(.protocolViolation("a reply no command asked for"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The decoder's errors are ours; anything else (TLS, I/O) ends the connection too.
        failAll(error as? RedisError ?? .connectionClosed)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        timer?.cancel()
        timer = nil
        timerDeadline = nil
        for promise in pipeline.closed() { promise.fail(error) }
    }

    private func armTimer(at deadline: NIODeadline, context: ChannelHandlerContext) {
        timer?.cancel()
        timerDeadline = deadline
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            timer = nil
            timerDeadline = nil
            deadlineReached()
        }
    }

    private func deadlineReached() {
        guard let context else { return }
        for promise in pipeline.deadlinesPassed(now: context.eventLoop.now) { promise.fail(RedisError.timeout) }
        if let next = pipeline.nextDeadline { armTimer(at: next, context: context) }
    }
}
