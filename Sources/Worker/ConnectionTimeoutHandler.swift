import NIOCore
import NIOHTTP1

/// Closes connections that hold a worker without making progress (slowloris and friends):
/// a request head must arrive within `headTimeout` of the connection opening, a body
/// within `bodyTimeout` of its head, and an idle keep-alive connection is closed after
/// `idleTimeout`. Timers run on the connection's event loop; nothing is shared.
///
/// One timer per connection, not per request: a new deadline later than the armed timer
/// only moves ``deadline``; the timer, when it fires early, re-arms for what is left.
final class ConnectionTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    struct Timeouts: Sendable {
        var head: TimeAmount
        var body: TimeAmount
        var idle: TimeAmount
    }

    private let timeouts: Timeouts
    private var timer: Scheduled<Void>?
    /// When the armed timer fires.
    private var timerFires: NIODeadline?
    /// When the connection is closed unless it makes progress (nil: no limit now).
    private var deadline: NIODeadline?
    private var requestsInFlight = 0

    init(timeouts: Timeouts) { self.timeouts = timeouts }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context, timeouts.head) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context, timeouts.head)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            requestsInFlight += 1
            arm(context, timeouts.body)
        case .end:
            disarm()  // the response may take as long as the upstream needs
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            requestsInFlight = max(0, requestsInFlight - 1)
            if requestsInFlight == 0 { arm(context, timeouts.idle) }
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func arm(_ context: ChannelHandlerContext, _ amount: TimeAmount) {
        let deadline = context.eventLoop.now + amount
        self.deadline = deadline
        if let timerFires, timerFires <= deadline { return }  // fires first, then re-arms
        schedule(context, at: deadline)
    }

    private func schedule(_ context: ChannelHandlerContext, at when: NIODeadline) {
        timer?.cancel()
        timerFires = when
        let channel = context.channel
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: when) { [self] in
            timer = nil
            timerFires = nil
            guard let deadline else { return }
            if deadline <= context.eventLoop.now {
                channel.close(promise: nil)
            } else {
                schedule(context, at: deadline)
            }
        }
    }

    private func disarm() {
        deadline = nil
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }
}
