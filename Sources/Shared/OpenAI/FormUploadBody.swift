/// A `multipart/form-data` upload (`/v1/audio/transcriptions`) on its way to an upstream, as
/// a value: the client's body is read through a ``MultipartFormScanner`` as it arrives and
/// queued for the upstream, with the `model` field's value swapped for the name the chosen
/// upstream knows the model by, and `stream_include_usage=true` added to a streamed request
/// that did not ask for usage (the gateway counts the tokens; the usage chunk is removed
/// again on the way back, as for chat). No I/O: the worker feeds it the client's chunks and
/// writes what ``takeOutgoing()`` hands out.
///
/// Until the first attempt starts (the model must be read, routed and admitted, a
/// connection opened) everything read is kept, so `model` may come anywhere in the form, even
/// after the file (the request's body limit bounds what is kept). Once bytes go to an
/// upstream they are kept only while the upload is at most ``replayLimit`` bytes: a small
/// upload can be sent again to the next upstream when the first fails before answering; a
/// larger one that reached an upstream cannot.
public struct FormUploadBody: Sendable {
    /// How much of an upload is kept to be sent again once sending started.
    public static let defaultReplayLimit = 256 << 10

    public let replayLimit: Int
    private var scanner: MultipartFormScanner
    /// What the scanner let through so far, the model's value left out (it goes at
    /// ``modelOffset``): kept to be sent (again). Nil once it grew past ``replayLimit`` while
    /// sending, or was dropped (``discard()``).
    private var kept: [UInt8]? = []
    private var modelOffset: Int?
    /// Bytes for the upstream being sent to, not yet taken.
    private var outgoing: [UInt8] = []
    /// An upstream takes what is read (``startSending(upstreamModel:)``).
    public private(set) var isSending = false
    /// The whole body was read and well-formed (``finish()``).
    public private(set) var hasEnded = false
    /// The client asked for a usage chunk in its stream.
    public private(set) var clientWantsUsage = false
    /// Bytes of the client's body read so far.
    public private(set) var bytesRead = 0

    public init(boundary: MultipartBoundary, replayLimit: Int = defaultReplayLimit) {
        scanner = MultipartFormScanner(boundary: boundary)
        self.replayLimit = replayLimit
    }

    /// The `model` field, once read (as the client sent it).
    public var clientModel: String? { scanner.model }

    /// The form asks for a streamed answer (`stream`, read as vLLM reads a form boolean).
    public var stream: Bool { scanner.values["stream"].flatMap(MultipartFormScanner.boolean) ?? false }

    /// What was read can still be sent to an upstream from its start.
    public var canStartSending: Bool { kept != nil && modelOffset != nil }

    /// Everything the upstream must get was handed out (the body ended and nothing waits).
    public var isComplete: Bool { hasEnded && outgoing.isEmpty }

    /// Reads a piece of the body.
    /// - Returns: the client's `model`, when it was read in this piece.
    /// - Throws: ``MultipartFormError`` for a body that is not a well-formed form.
    public mutating func feed(_ chunk: UnsafeRawBufferPointer) throws(MultipartFormError) -> String? {
        bytesRead += chunk.count
        var out: [UInt8] = []
        out.reserveCapacity(chunk.count + 8)
        var position = 0
        var model: String?
        while let event = try scanner.next(chunk, at: &position, into: &out) {
            switch event {
            case .field(name: "model", let value):
                _ = scanner.replaceValue(with: "", into: &out)
                modelOffset = (kept?.count ?? 0) + out.count
                model = value
            case .field, .part:
                break
            case .end:
                let asked = scanner.values["stream_include_usage"].flatMap(MultipartFormScanner.boolean)
                clientWantsUsage = asked ?? false
                // vLLM refuses stream options on a request that is not streamed.
                if stream && asked == nil { _ = scanner.insertField(name: "stream_include_usage", value: "true", into: &out) }
            }
        }
        deliver(out)
        return model
    }

    /// The body is over.
    /// - Throws: ``MultipartFormError/incompleteBody`` when the form did not end.
    public mutating func finish() throws(MultipartFormError) {
        var out: [UInt8] = []
        try scanner.finish(into: &out)
        deliver(out)
        hasEnded = true
    }

    /// Starts sending to an upstream that knows the model as `upstreamModel`: everything
    /// read so far is queued, with that name as the model's value.
    /// - Returns: false when what was read is no longer all kept (a large upload already
    ///   sent elsewhere), or the model was not read, or the name would break the form.
    public mutating func startSending(upstreamModel: String) -> Bool {
        guard let kept, let modelOffset, !upstreamModel.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A }) else { return false }
        outgoing = Array(kept[..<modelOffset])
        outgoing.append(contentsOf: upstreamModel.utf8)
        outgoing.append(contentsOf: kept[modelOffset...])
        isSending = true
        if kept.count > replayLimit { self.kept = nil }
        return true
    }

    /// The upstream being sent to is gone: nothing more is queued for it.
    public mutating func stopSending() {
        isSending = false
        outgoing = []
    }

    /// The bytes to write to the upstream now (none left queued after).
    public mutating func takeOutgoing() -> [UInt8] {
        defer { outgoing = [] }
        return outgoing
    }

    /// Nothing read from here on is kept or sent (an answer that needs no upstream).
    public mutating func discard() {
        kept = nil
        stopSending()
    }

    private mutating func deliver(_ out: [UInt8]) {
        guard !out.isEmpty else { return }
        if isSending { outgoing.append(contentsOf: out) }
        guard kept != nil else { return }
        kept!.append(contentsOf: out)
        if isSending && kept!.count > replayLimit { kept = nil }
    }
}
