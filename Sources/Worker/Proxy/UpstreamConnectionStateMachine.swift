import NIOCore

/// The life of one upstream connection as a value: which request is waiting for its answer,
/// whether the answer's final head came, when the upstream timeout runs out, whether reading
/// is paused for a slow client, whether the connection may be reused. ``UpstreamConnection``
/// feeds it what happens on the channel (with the time: it reads no clock) and does what it
/// answers; nothing here touches a channel, so every transition is tested without I/O.
///
/// The upstream timeout counts from the request until the final (≥ 200) head — so a trickle
/// of bytes or of 1xx heads cannot extend it — and then from the last read. While reading is
/// paused the client is the slow one: the time paused does not count.
struct UpstreamConnectionStateMachine {
    /// 1xx heads accepted before one answer's final head; more is a flood, and fails it.
    static let maxInformational = 8

    /// A request was sent and its answer has not ended (nor failed, nor been abandoned).
    private(set) var inFlight = false
    private var keepAlive = true
    /// A byte of an answer arrived (then a close is no stale keep-alive connection).
    private var receivedAny = false
    private var reused = false
    /// Inside a 1xx answer: its end is not the answer's end.
    private var skippingInformational = false
    private var informational = 0
    private var awaitingFinalHead = false
    private var requestSent = NIODeadline.uptimeNanoseconds(0)
    /// The last read, request sent or resume: once the final head is in, the timeout counts
    /// from it.
    private(set) var lastActivity = NIODeadline.uptimeNanoseconds(0)
    private(set) var paused = false
    /// A `read()` came while paused: issue it on resume.
    private var readPending = false
    /// An upload's body is still being written: an answer that ends before it does leaves the
    /// request unfinished on the wire, and the connection is not reused.
    private(set) var bodyOpen = false
    /// Why the connection is being closed, for the failure the waiting request gets.
    private(set) var closeReason: String?

    init() {}

    // MARK: Requests

    /// A request was written.
    mutating func requestSent(now: NIODeadline, reused: Bool) {
        inFlight = true
        self.reused = reused
        keepAlive = true
        receivedAny = false
        skippingInformational = false
        informational = 0
        awaitingFinalHead = true
        lastActivity = now
        requestSent = now
        bodyOpen = false
    }

    /// An upload's head was written: its body follows piece by piece until ``bodyEnded(now:)``.
    mutating func uploadStarted() { bodyOpen = true }

    /// The upload's last chunk was written.
    mutating func bodyEnded(now: NIODeadline) {
        bodyWritten(now: now)
        bodyOpen = false
    }

    /// A piece of an upload's body was written: the wait for the answer counts from the
    /// last one (a slow client's upload is not the upstream's delay).
    mutating func bodyWritten(now: NIODeadline) {
        guard inFlight else { return }
        lastActivity = now
        requestSent = now
    }

    /// The client went away (or failover moved on): the answer is nobody's any more.
    mutating func abandoned() { inFlight = false }

    // MARK: Reading and backpressure

    /// NIO asks to read: true to pass the read on, false to hold it until ``resumed(now:)``.
    mutating func readRequested() -> Bool {
        if paused {
            readPending = true
            return false
        }
        return true
    }

    /// The client cannot take more: stop reading.
    mutating func pause() { paused = true }

    /// The client can take more. True when a read was held and must be issued now.
    mutating func resumed(now: NIODeadline) -> Bool {
        guard paused else { return false }
        paused = false
        lastActivity = now
        defer { readPending = false }
        return readPending
    }

    /// Bytes arrived. False when nobody asked for them (no request waits and no answer is
    /// half-read): the upstream is out of step with this connection, which must be closed
    /// and never reused.
    mutating func bytesArrived(now: NIODeadline, parserIdle: Bool) -> Bool {
        lastActivity = now
        guard inFlight || !parserIdle else {
            closeReason = "the upstream sent bytes no request asked for"
            return false
        }
        return true
    }

    // MARK: The answer's parts

    enum HeadAction: Equatable {
        /// The answer's head: pass it on.
        case deliver
        /// A 1xx head: the real one follows, within the same deadline.
        case skip
        /// Too many 1xx heads: close the connection (the request fails with ``closeReason``).
        case close
        /// A head nobody asked for (behind an answer that just ended): close, never reuse.
        case unsolicited
    }

    mutating func head(status: Int, keepAlive: Bool, now: NIODeadline) -> HeadAction {
        guard inFlight else {
            closeReason = "the upstream sent bytes no request asked for"
            return .unsolicited
        }
        receivedAny = true
        if status < 200 {
            informational += 1
            guard informational <= Self.maxInformational else {
                closeReason = "more than \(Self.maxInformational) informational (1xx) answers"
                return .close
            }
            skippingInformational = true
            return .skip
        }
        awaitingFinalHead = false
        lastActivity = now
        self.keepAlive = keepAlive
        return .deliver
    }

    enum EndAction: Equatable {
        /// The end of a 1xx answer: the real one follows.
        case informationalEnded
        /// The answer ended. `deliver`: someone waits for it; `reuse`: back to the pool (else
        /// close); `read`: a read was held for a slow client and must be issued (an idle
        /// connection keeps reading, to notice the upstream closing it).
        case ended(deliver: Bool, reuse: Bool, read: Bool)
    }

    /// The answer's end. `parserIdle`: no byte behind it (bytes already behind the end were
    /// asked for by nobody, so the connection is not reused); `channelActive`: still open.
    mutating func end(parserIdle: Bool, channelActive: Bool, now: NIODeadline) -> EndAction {
        if skippingInformational {
            skippingInformational = false
            return .informationalEnded
        }
        let deliver = inFlight
        inFlight = false
        let read = resumed(now: now)
        return .ended(deliver: deliver, reuse: keepAlive && deliver && channelActive && parserIdle && !bodyOpen, read: read)
    }

    /// The connection is closing because of a protocol error or a socket error.
    mutating func failing(because reason: String) { closeReason = reason }

    // MARK: Time and the end of the connection

    enum TimerAction: Equatable {
        /// Nothing waits: the timer lapses until the next request arms it.
        case lapse
        /// Not yet: fire again in this much.
        case rearm(TimeAmount)
        /// The upstream was quiet for the whole timeout: fail the request, close.
        case timedOut
    }

    /// The connection's one timer fired (it stays armed across requests and checks the
    /// time when it fires).
    mutating func timerFired(now: NIODeadline, timeout: TimeAmount) -> TimerAction {
        guard inFlight else { return .lapse }
        if paused {
            // The client is slow, not the upstream: the timeout counts from the resume.
            lastActivity = now
        }
        let quiet = now - (awaitingFinalHead ? requestSent : lastActivity)
        if quiet < timeout { return .rearm(timeout - quiet) }
        inFlight = false
        return .timedOut
    }

    /// The connection closed. The failure the waiting request gets, if one waits: a reused
    /// connection that closed before any byte of the answer was stale (the upstream had
    /// timed it out just as it was reused: sending again is safe).
    mutating func closed() -> UpstreamFailure? {
        guard inFlight else { return nil }
        inFlight = false
        return receivedAny || !reused ? .failed(closeReason ?? "connection closed by the upstream") : .staleConnection
    }
}
