import Atomics
import CGatewayShims
import Dispatch
import Foundation
import Logging
import NIOCore
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// Takes this worker's share of the connections on the listening socket all workers
/// share, so that connections opened together spread over the workers.
///
/// NIO's server channel watches a listening socket level-triggered: every worker's event
/// loop wakes for every new connection, and the loop that runs first takes it (and up to
/// three more). On idle workers that is mostly the same one: of 100 connections a client
/// opened together, one of two workers took 56 to 100 (about 75 typically, 12 rounds), and
/// kept them — keep-alive, streams — for their lifetime, on one core.
///
/// Here, as in nginx, a worker waits on the socket with `EPOLLEXCLUSIVE`: the kernel wakes
/// one waiting worker per new connection, not all of them. A thread per worker does the
/// waiting (NIO offers no way to register a socket exclusively); the accepting itself runs
/// on the worker's event loop, one connection per wake-up, and the thread waits again only
/// after the loop has taken it — so a worker whose loop is busy is not among the waiters,
/// and the next connection wakes another. When no worker is waiting, the connection stays
/// queued on the socket until one waits again (level-triggered), so none is lost; a
/// connection whose wake-up went to a worker that cannot take it (its loop hangs while the
/// waiter runs) is found by the others' look at the socket every ``probeInterval`` ms.
///
/// Who waits is not left to timing alone: with idle workers the first to wait again would
/// take most of a burst (measured: 47 to 98 of 100, 6 rounds). ``AcceptBalance`` keeps a worker out
/// of the wait while it holds more connections than the others (least connections).
final class Acceptor: Sendable {
    /// The accept fails for want of descriptors or memory: waiting again at once would spin
    /// (the socket stays readable), so the waiter pauses this long first.
    static let resourceBackoff: TimeAmount = .milliseconds(100)
    /// A waiting worker looks at the socket itself this often: with `EPOLLEXCLUSIVE` the
    /// wake-up for a connection can go to a worker that never takes it (its waiter runs but
    /// its loop hangs), and nothing else would tell the others it is queued.
    static let probeInterval: Int32 = 250

    private let listenerFD: Int32
    private let eventLoop: any EventLoop
    private let logger: Logger
    /// Who waits for the next connection (nil: this worker always does).
    private let balance: AcceptBalance?
    /// Runs on the event loop with each accepted connection's descriptor (non-blocking,
    /// close-on-exec), which it owns from then on.
    private let accepted: @Sendable (Int32) -> Void

    private let epollFD: Int32
    private let wakeFD: Int32
    private let stopping = ManagedAtomic(false)
    /// Signalled by the loop when it has handled a wake-up (and by ``stop()``).
    private let handled = DispatchSemaphore(value: 0)
    /// Set by the loop when the waiter should pause before waiting again (nanoseconds).
    private let pauseNanoseconds = ManagedAtomic<Int64>(0)
    /// When a failed accept was last logged (one warning per 10 s at most).
    private let lastFailureLogged = ManagedAtomic<UInt64>(0)
    private let stoppedPromise: EventLoopPromise<Void>

    /// Completes when ``stop()`` has been called and the listening socket is closed here.
    var stopped: EventLoopFuture<Void> { stoppedPromise.futureResult }

    init(
        listenerFD: Int32, eventLoop: any EventLoop, balance: AcceptBalance?, logger: Logger, accepted: @escaping @Sendable (Int32) -> Void
    ) throws {
        // Another worker may take the connection this one was woken for: accept must then
        // fail with EAGAIN, not block the event loop.
        guard gw_set_nonblocking(listenerFD) == 0 else { throw AcceptorError("the listening socket", errno: errno) }
        let wakeFD = gw_eventfd()
        guard wakeFD >= 0 else { throw AcceptorError("eventfd", errno: errno) }
        let epollFD = gw_accept_waiter_create(listenerFD, wakeFD)
        guard epollFD >= 0 else {
            let saved = errno
            close(wakeFD)
            throw AcceptorError("epoll on the listening socket", errno: saved)
        }
        self.listenerFD = listenerFD
        self.eventLoop = eventLoop
        self.logger = logger
        self.balance = balance
        self.accepted = accepted
        self.wakeFD = wakeFD
        self.epollFD = epollFD
        self.stoppedPromise = eventLoop.makePromise()
    }

    deinit {
        close(epollFD)
        close(wakeFD)
    }

    /// Starts the waiter thread.
    func start() {
        Thread { [self] in
            _ = gw_set_process_name("acceptor")  // this thread's name in top -H, ps -L
            self.waitForConnections()
        }.start()
    }

    /// Stops taking connections: the waiter leaves, a wake-up already handed to the loop
    /// accepts nothing, and the listening socket is closed in this worker (the other workers
    /// and the supervisor keep it open). Any thread; idempotent.
    func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = gw_eventfd_signal(wakeFD)
        handled.signal()
        // Workers that stepped out for this one look again.
        balance?.bump()
        eventLoop.execute { [self] in
            // On the loop, so that no accept of this worker runs at the same time.
            close(listenerFD)
            stoppedPromise.succeed()
        }
    }

    private func waitForConnections() {
        while !stopping.load(ordering: .acquiring) {
            if let balance {
                let seen = balance.epoch
                if !balance.mayWait() {
                    balance.stepOut(seen: seen)
                    continue
                }
            }
            let ready = gw_accept_waiter_wait(epollFD, listenerFD, Self.probeInterval)
            if ready < 0 {
                logger.error("waiting for connections failed: \(String(cString: strerror(errno))); retrying")
                pauseNanoseconds.store(Self.resourceBackoff.nanoseconds, ordering: .relaxed)
            } else if ready == 1, !stopping.load(ordering: .acquiring) {
                eventLoop.execute { [self] in
                    acceptOne()
                    handled.signal()
                }
                handled.wait()
                // Ahead of the others now: step out next round, and let them know.
                if let balance, !balance.mayWait() { balance.bump() }
            }
            let pause = pauseNanoseconds.exchange(0, ordering: .relaxed)
            if pause > 0 { usleep(UInt32(pause / 1000)) }
        }
    }

    /// On the loop: one connection, if one is still queued (another worker may have taken it).
    private func acceptOne() {
        guard !stopping.load(ordering: .acquiring) else { return }
        let fd = gw_accept_nonblocking(listenerFD)
        if fd >= 0 {
            accepted(fd)
            return
        }
        let error = errno
        switch error {
        case EAGAIN, EWOULDBLOCK, EINTR, ECONNABORTED, EPROTO, EPERM:
            return  // taken by another worker, or the client gave up before it was taken
        default:
            // EMFILE, ENFILE, ENOBUFS, ENOMEM or worse: the connection stays queued (another
            // worker may take it); this one pauses rather than spin on a readable socket.
            pauseNanoseconds.store(Self.resourceBackoff.nanoseconds, ordering: .relaxed)
            let now = UInt64(eventLoop.now.uptimeNanoseconds)
            let last = lastFailureLogged.load(ordering: .relaxed)
            if last == 0 || now - last >= 10_000_000_000 {
                lastFailureLogged.store(now, ordering: .relaxed)
                logger.warning("cannot accept connections: \(String(cString: strerror(error))); pausing 100 ms between tries")
            }
        }
    }
}

/// The acceptor could not be set up (the worker cannot serve).
struct AcceptorError: Error, CustomStringConvertible {
    var description: String
    init(_ what: String, errno code: Int32) { description = "\(what): \(String(cString: strerror(code)))" }
}
