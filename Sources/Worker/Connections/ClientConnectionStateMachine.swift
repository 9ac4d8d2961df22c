import HTTP1
import NIOCore
import NIOHTTP1

/// A client connection's lifecycle as a pure state machine: which parsed part is served now
/// and which waits behind the response under way (pipelining, bounded), whether the socket
/// is read, the head, body and idle deadlines, keep-alive or close after a response, the
/// worker's drain, the client hanging up, and whether what the parser refused may be
/// answered.
///
/// ``GatewayConnection`` feeds it events (parts, reads, a response's end, the timer, the
/// drain deadline, the socket closing) and performs the action each returns; time is passed
/// in (the event loop's clock), so every path is tested without I/O. It holds no byte of
/// the request being read: the handler gathers the body in place. It is a value in the
/// handler and its actions are small enums returned by value: nothing is allocated per
/// request.
///
/// One scheduled check per connection, not per request: a deadline later than the check
/// already scheduled only moves ``deadline``; the check, when it comes early, is scheduled
/// again for what is left (``deadlineCheck(now:)``).
struct ClientConnectionStateMachine {
    /// How long a connection may go without progress.
    struct Timeouts: Sendable {
        /// From the connection opening to its first request head.
        var head: TimeAmount
        /// From a head to the end of its body.
        var body: TimeAmount
        /// From a response's end to the next request (keep-alive).
        var idle: TimeAmount
    }

    typealias RequestPart = HTTPPart<RequestHead, ByteBuffer>

    enum Phase: Equatable {
        /// Between requests, or before the first.
        case idle
        /// A head was taken and its body is being read.
        case readingBody
        /// A response is under way.
        case responding
        /// The connection closes: whatever arrives is dropped.
        case closing
    }

    /// What the handler does for an event.
    enum Action: Equatable {
        case nothing
        /// Pass `read()` on to the socket.
        case read
        /// Run ``deadlineCheck(now:)`` at this instant, instead of the check scheduled before.
        case scheduleCheck(NIODeadline)
        /// Take this head: check it (body size, route, method, key) and read its body, or
        /// answer it at once and feed ``refusedBeforeBody()``.
        case startRequest(RequestHead)
        /// A piece of the body being read.
        case appendBody(ByteBuffer)
        /// The request was read whole: answer it.
        case respond
        /// Answer what the parser refused (400, 431, 505); the connection closes after it.
        case refuse(HTTP1ParseError)
        /// Tell the producer of the response under way that the drain deadline came, then
        /// feed ``producerToldOfDrain()``.
        case tellProducerOfDrain
        /// The client hung up mid-response: stop its producer, count and log the request.
        case abandonResponse
        /// The connection closes: drop this part and the rest of the read.
        case discard
        /// Close the connection now.
        case close
    }

    /// What follows the end of a response (its own type: the handler performs it with the
    /// bytes the response has left to send).
    enum ResponseEndAction: Equatable {
        /// Send what is left, then close.
        case close
        /// Send what is left; schedule the check at `idleCheck` if set, and serve the
        /// pipelined requests (``servePipelined()``) if `servePipelined`.
        case keepAlive(idleCheck: NIODeadline?, servePipelined: Bool)
    }

    /// Pipelined body bytes held at most before the connection is closed (on top of one
    /// request's body limit).
    static let maxPipelinedBytes = 1 << 20
    /// Pipelined request parts held at most (a flood of tiny requests in one write).
    static let maxPipelinedParts = 1024

    let timeouts: Timeouts
    /// One request's body limit.
    let maxBodyBytes: Int
    private(set) var phase = Phase.idle
    /// Requests read whose response has not ended (more than one when pipelined).
    private(set) var requestsInFlight = 0
    /// Parts of pipelined requests that arrived during a response, in order.
    private var pipelined = CircularBuffer<RequestPart>()
    private var pipelinedBytes = 0
    /// A `read()` came while a pipelined request waited: passed on once none waits.
    private(set) var readHeld = false
    /// A head arrived and its end has not: the body deadline starts once the read is
    /// handled (a request that arrives whole in one read never arms it).
    private var awaitingBody = false
    /// The response under way is the connection's last (a refusal, the drain deadline).
    private var closeAfterResponse = false
    /// The request being read hands its body to a producer as it arrives (an upload): that
    /// producer is under way before the body ends, so a hang-up or the drain reaches it.
    private(set) var bodyStreamed = false
    /// That producer cannot take more now: the socket is not read until it can.
    private(set) var bodyReadsPaused = false
    /// When the connection is closed unless it makes progress (nil: no limit now).
    private(set) var deadline: NIODeadline?
    /// When the scheduled check runs (nil: none is scheduled).
    private(set) var checkScheduled: NIODeadline?

    init(timeouts: Timeouts, maxBodyBytes: Int) {
        self.timeouts = timeouts
        self.maxBodyBytes = maxBodyBytes
    }

    /// Parts waiting behind the response under way.
    var pipelinedParts: Int { pipelined.count }

    // MARK: - The socket

    /// The connection is open: a head must arrive within the head timeout.
    mutating func channelActive(now: NIODeadline) -> Action {
        if let check = arm(timeouts.head, now: now) { return .scheduleCheck(check) }
        return .nothing
    }

    /// The connection closed (the client hung up, or it was closed); the handler cancels
    /// the scheduled check.
    mutating func channelInactive() -> Action {
        let wasResponding = phase == .responding || (phase == .readingBody && bodyStreamed)
        phase = .closing
        deadline = nil
        checkScheduled = nil
        return wasResponding ? .abandonResponse : .nothing
    }

    /// `read()` from the pipeline: passed on, unless a pipelined request waits (reading
    /// resumes once it is served). Clients that do not pipeline (nearly all) never stop
    /// reading, so a keep-alive request costs no `epoll_ctl` to pause and resume the socket.
    mutating func readRequested() -> Action {
        guard !pipelined.isEmpty || bodyReadsPaused else { return .read }
        readHeld = true
        return .nothing
    }

    // MARK: - Requests

    /// A part the parser produced: served now, queued behind the response under way (or
    /// behind parts already queued), or dropped when the connection closes. Too much
    /// queued closes the connection.
    mutating func received(_ part: RequestPart) -> Action {
        if phase == .closing { return .discard }
        switch part {
        case .head:
            requestsInFlight += 1
            awaitingBody = true
        case .end:
            awaitingBody = false
            deadline = nil  // the response may take as long as the upstream needs
        case .body:
            break
        }
        guard phase == .responding || !pipelined.isEmpty else { return serve(part) }
        if case .body(let chunk) = part { pipelinedBytes += chunk.readableBytes }
        guard pipelinedBytes <= maxBodyBytes + Self.maxPipelinedBytes, pipelined.count < Self.maxPipelinedParts else {
            return .close
        }
        pipelined.append(part)
        return .nothing
    }

    /// The parts of one read were handled: a head still waiting for its body arms the body
    /// deadline. `now` is read only then (most reads hold whole requests).
    mutating func readHandled(now: @autoclosure () -> NIODeadline) -> Action {
        guard awaitingBody else { return .nothing }
        awaitingBody = false
        if let check = arm(timeouts.body, now: now()) { return .scheduleCheck(check) }
        return .nothing
    }

    /// The next pipelined part to serve after a response ended, until a response is under
    /// way again; once none waits, a `read()` that was held. Nil: nothing to do now.
    mutating func servePipelined() -> Action? {
        if pipelined.isEmpty {
            guard readHeld, !bodyReadsPaused else { return nil }
            readHeld = false
            return .read
        }
        guard phase == .idle || phase == .readingBody else { return nil }
        let part = pipelined.removeFirst()
        if case .body(let chunk) = part { pipelinedBytes -= chunk.readableBytes }
        return serve(part)
    }

    /// A part in its turn: a head starts a request when none is under way; body and end
    /// belong to the request being read. Anything else cannot come from the parser: the
    /// connection closes rather than guess.
    private mutating func serve(_ part: RequestPart) -> Action {
        switch part {
        case .head(let head) where phase == .idle:
            phase = .readingBody
            return .startRequest(head)
        case .body(let chunk) where phase == .readingBody:
            return .appendBody(chunk)
        case .end where phase == .readingBody:
            phase = .responding
            return .respond
        default:
            return .close
        }
    }

    /// The request just started takes its body as it arrives (``appendBody(_:)`` actions go
    /// to a producer already under way, ``respond`` tells it the body ended).
    mutating func streamingBody() {
        guard phase == .readingBody else { return }
        bodyStreamed = true
    }

    /// The streamed body's producer cannot take more: stop reading the socket.
    mutating func pauseBodyReads() {
        guard phase == .readingBody, bodyStreamed else { return }
        bodyReadsPaused = true
    }

    /// It can take more again: a held `read()` is passed on now.
    mutating func resumeBodyReads() -> Action {
        guard bodyReadsPaused else { return .nothing }
        bodyReadsPaused = false
        guard readHeld, pipelined.isEmpty else { return .nothing }
        readHeld = false
        return .read
    }

    /// The request being read is answered before its body is (413, or refused on its head
    /// alone): the connection closes after the answer, since the unread body cannot be
    /// told from a next request.
    mutating func refusedBeforeBody() {
        guard phase == .readingBody else { return }
        phase = .responding
        closeAfterResponse = true
    }

    /// The parser refused what it read. Answered when no response is under way or waiting
    /// (idle or reading a body, nothing pipelined) and the client is still there; the
    /// connection closes either way, since its framing can no longer be trusted. A response
    /// under way is cut off: ``channelInactive()`` abandons it.
    mutating func parseError(_ error: HTTP1ParseError, channelActive: Bool) -> Action {
        guard phase == .idle || phase == .readingBody, pipelined.isEmpty, channelActive else { return .close }
        phase = .responding
        closeAfterResponse = true
        return .refuse(error)
    }

    /// The response under way ended. The connection closes after it when the response says
    /// so (`connection: close`, HTTP/1.0, a body that ends with the connection), when it
    /// was a refusal, or when the worker drains. Else it stays open: the idle deadline
    /// starts unless another request was read meanwhile, and pipelined requests are served.
    mutating func responseEnded(keepAlive: Bool, draining: Bool, now: NIODeadline) -> ResponseEndAction {
        let streamed = bodyStreamed
        bodyStreamed = false
        bodyReadsPaused = false
        // Only the response under way ends (the handler checks it is that one's writer). One
        // that ends before its streamed body did leaves the rest unread: the connection closes.
        guard phase == .responding else {
            if streamed && phase == .readingBody { phase = .closing }
            return .close
        }
        requestsInFlight = max(0, requestsInFlight - 1)
        if !keepAlive || draining || closeAfterResponse {
            phase = .closing
            return .close
        }
        phase = .idle
        let idleCheck = requestsInFlight == 0 ? arm(timeouts.idle, now: now) : nil
        return .keepAlive(idleCheck: idleCheck, servePipelined: !pipelined.isEmpty)
    }

    // MARK: - Time and the drain

    /// The scheduled check runs: past the deadline the connection closes; before it (the
    /// deadline moved later since the check was scheduled) the check is scheduled again;
    /// with no deadline now, nothing.
    mutating func deadlineCheck(now: NIODeadline) -> Action {
        checkScheduled = nil
        guard let deadline else { return .nothing }
        if deadline <= now { return .close }
        checkScheduled = deadline
        return .scheduleCheck(deadline)
    }

    /// The worker's drain timeout is over: a response under way is ended by its producer
    /// where it can be (a stream gets an error event and `[DONE]`) and is the last; an idle
    /// connection closes; a body being read is left to the registry's grace.
    mutating func drainDeadlineReached() -> Action {
        switch phase {
        case .responding:
            closeAfterResponse = true
            return .tellProducerOfDrain
        case .readingBody where bodyStreamed:
            closeAfterResponse = true
            return .tellProducerOfDrain
        case .idle:
            return .close
        case .readingBody, .closing:
            return .nothing
        }
    }

    /// The producer heard of the drain deadline: a response it could not end is cut off.
    func producerToldOfDrain() -> Action {
        switch phase {
        case .responding, .idle: .close
        case .readingBody: bodyStreamed ? .close : .nothing
        case .closing: .nothing
        }
    }

    /// Starts a deadline `amount` from `now`; returns when a check must be scheduled (nil
    /// when the scheduled check comes first: it is scheduled again for what is left).
    private mutating func arm(_ amount: TimeAmount, now: NIODeadline) -> NIODeadline? {
        let deadline = now + amount
        self.deadline = deadline
        if let checkScheduled, checkScheduled <= deadline { return nil }
        checkScheduled = deadline
        return deadline
    }
}
