import NIOCore
import Shared

/// The client connection's side of an upload: reading its socket stops while the upload
/// cannot take more, and resumes when it can.
protocol UploadReads: AnyObject {
    func pauseUploadReads()
    func resumeUploadReads()
}

/// An upload (`/v1/audio/transcriptions`, `/v1/audio/translations`) while its body arrives:
/// each piece goes through its ``FormUploadBody`` and on to the upstream connection of the
/// attempt under way, chunked, as it is read. Once `model` is read the request is routed and
/// admitted (``ProxyHandler/routeUpload(_:model:)``) and a ``ProxyExchange`` opens the
/// connection and relays the answer as for any route.
///
/// Backpressure: the client's socket is read while the model is not known yet (what comes
/// is kept, within the body limit), and while an upstream takes the bytes; it is not read
/// while the request is being routed, admitted or connected, nor while the upstream's
/// socket is full. Everything runs on the connection's event loop.
final class FormUpload {
    enum Phase: Equatable {
        /// `model` is not read yet.
        case readingModel
        /// Being admitted and routed, or between attempts: nothing goes out.
        case routing
        /// An upstream connection takes the body.
        case sending
        /// The answer needs no upstream (the demo model): the rest is read and dropped.
        case discarding
        /// Answered (or refused): nothing more happens.
        case over
    }

    private let proxy: ProxyHandler
    /// The request as the exchange sees it (its body is empty: the upload carries it).
    let request: GatewayRequest
    let identity: ClientIdentity
    let writer: ResponseWriter
    private weak var reads: (any UploadReads)?
    private var body: FormUploadBody
    private(set) var phase = Phase.readingModel
    /// The exchange relaying the answer, once the request was admitted (it holds the upload).
    weak var exchange: ProxyExchange?
    private var connection: UpstreamConnection?
    /// The upstream got the body's last chunk.
    private(set) var sentEnd = false
    private var whenBodyEnds: (() -> Void)?

    init(
        proxy: ProxyHandler, request: GatewayRequest, boundary: MultipartBoundary, identity: ClientIdentity, writer: ResponseWriter,
        reads: any UploadReads
    ) {
        self.proxy = proxy
        self.request = request
        self.identity = identity
        self.writer = writer
        self.reads = reads
        self.body = FormUploadBody(boundary: boundary)
    }

    /// The form asks for a streamed answer (read once the body ended).
    var stream: Bool { body.stream }
    /// The client asked for the usage chunk of a stream.
    var clientWantsUsage: Bool { body.clientWantsUsage }
    /// The next attempt can be sent the whole body (nothing was let go).
    var canStartAttempt: Bool { body.canStartSending }

    // MARK: The client's body

    /// A piece of the body (within the body limit: the connection checked it).
    func received(_ chunk: ByteBuffer) {
        guard phase != .over else { return }
        let model: String?
        do {
            model = try chunk.withUnsafeReadableBytes { raw throws(MultipartFormError) in try body.feed(raw) }
        } catch {
            fail(error.gatewayError)
            return
        }
        if let model, phase == .readingModel {
            phase = .routing
            proxy.routeUpload(self, model: model)
            guard phase != .over else { return }
        }
        pump()
    }

    /// The body ended.
    func ended() {
        guard phase != .over else { return }
        do {
            try body.finish()
        } catch {
            fail(error.gatewayError)
            return
        }
        guard body.clientModel != nil else {
            fail(.badRequest("You must provide a model parameter.", param: "model", code: "missing_model"))
            return
        }
        pump()
        if phase == .discarding, let then = whenBodyEnds {
            whenBodyEnds = nil
            then()
        }
    }

    /// The body is over the limit (the connection closes after the answer).
    func tooLarge(limit: Int) { fail(.payloadTooLarge(limit: limit)) }

    // MARK: The exchange's side

    /// The attempt's connection is open and its head sent: it gets the body from its start,
    /// with the model named `upstreamModel`. False when that cannot be done (a large body
    /// already sent to an earlier attempt).
    func attach(_ connection: UpstreamConnection, upstreamModel: String) -> Bool {
        guard phase == .routing, body.startSending(upstreamModel: upstreamModel) else { return false }
        self.connection = connection
        phase = .sending
        sentEnd = false
        pump()
        return true
    }

    /// The attempt is over (answered, failed or abandoned): nothing more goes to its connection.
    func detach() {
        guard phase == .sending else { return }
        connection = nil
        body.stopSending()
        phase = .routing
        pump()
    }

    /// The upstream's socket takes more.
    func upstreamWritable() { pump() }

    /// The answer needs no upstream: the rest of the body is read and dropped, then `then` runs.
    func discardRest(then: @escaping () -> Void) {
        guard phase != .over else { return }
        body.discard()
        phase = .discarding
        if body.hasEnded {
            then()
        } else {
            whenBodyEnds = then
            pump()
        }
    }

    /// The request is over (the client left, an error was answered): nothing more happens.
    func stop() {
        phase = .over
        connection = nil
        whenBodyEnds = nil
        body.discard()
    }

    // MARK: Moving the bytes

    /// Writes what is queued to the upstream (and the last chunk once the body ended), then
    /// reads the client's socket on or holds it.
    private func pump() {
        if phase == .sending, let connection {
            connection.writeBodyChunk(body.takeOutgoing())
            if body.isComplete && !sentEnd {
                sentEnd = true
                connection.endBody()
            }
        }
        let mayRead =
            switch phase {
            case .readingModel, .discarding: true
            case .sending: connection?.isWritable ?? false
            case .routing, .over: false
            }
        if mayRead { reads?.resumeUploadReads() } else { reads?.pauseUploadReads() }
    }

    /// Refuses the request with `error` (a bad form, too large): the exchange under way stops
    /// and answers it; it is answered here when no exchange started or none is relaying an
    /// answer (the demo model waits for the body's end). The connection closes after it when
    /// the rest of the body is left unread.
    private func fail(_ error: GatewayError) {
        let exchange = self.exchange
        let bodyEnded = body.hasEnded
        stop()
        if !bodyEnded { writer.forceClose() }
        exchange?.abort(with: error, logged: error.code ?? "upload_refused")
        if !writer.headSent, !writer.clientGone, !writer.isComplete {
            writer.send(error: error)
        }
    }
}
