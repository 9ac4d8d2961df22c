import Testing

@testable import Shared

/// An upload as the gateway passes it on: cut anywhere, the upstream gets the client's form
/// with the model renamed (and the usage request added to a stream), sent again to a second
/// upstream only while it is small enough to have been kept.
@Suite struct FormUploadBodyTests {
    static let boundary = "x-boundary-42"
    static let audio: [UInt8] = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 31) } + Array("\r\n--x-boundary-4".utf8)

    /// Feeds `body` in pieces of `size`, starting to send to `upstreamModel` as soon as the
    /// model is read (or at the end); returns what the upstream got.
    static func send(_ body: [UInt8], pieces size: Int, upstreamModel: String = "org/whisper-tiny", replayLimit: Int = 1 << 20) throws
        -> (FormUploadBody, [UInt8])
    {
        var upload = FormUploadBody(boundary: try MultipartBoundary(boundary), replayLimit: replayLimit)
        var sent: [UInt8] = []
        var start = 0
        while start < body.count {
            let piece = Array(body[start..<min(body.count, start + size)])
            start += size
            let model = try piece.withUnsafeBytes { raw throws(MultipartFormError) in try upload.feed(raw) }
            if model != nil { #expect(upload.startSending(upstreamModel: upstreamModel) == true) }
            sent += upload.takeOutgoing()
        }
        try upload.finish()
        sent += upload.takeOutgoing()
        return (upload, sent)
    }

    @Test(arguments: [1, 7, 100, 100_000])
    func modelIsRenamedWhereverTheBodyIsCut(piece: Int) throws {
        let body = TestMultipart.body(
            boundary: Self.boundary, parts: [.field("model", "whisper"), .field("language", "en"), .file(Self.audio)])
        let (upload, sent) = try Self.send(body, pieces: piece)
        #expect(upload.clientModel == "whisper")
        #expect(upload.isComplete == true)
        #expect(upload.stream == false)
        let parts = try #require(TestMultipart.parse(sent, boundary: Self.boundary))
        #expect(parts == [.field("model", "org/whisper-tiny"), .field("language", "en"), .file(Self.audio)])
        #expect(upload.bytesRead == body.count)
    }

    @Test func modelAfterTheFileIsKeptUntilItIsRead() throws {
        let body = TestMultipart.body(boundary: Self.boundary, parts: [.file(Self.audio), .field("model", "whisper")])
        var upload = FormUploadBody(boundary: try MultipartBoundary(Self.boundary))
        let half = body.count / 2
        let first = try Array(body[..<half]).withUnsafeBytes { raw throws(MultipartFormError) in try upload.feed(raw) }
        #expect(first == nil)
        #expect(upload.canStartSending == false)
        #expect(upload.takeOutgoing().isEmpty)
        let second = try Array(body[half...]).withUnsafeBytes { raw throws(MultipartFormError) in try upload.feed(raw) }
        #expect(second == "whisper")
        #expect(upload.startSending(upstreamModel: "big-whisper") == true)
        try upload.finish()
        let parts = try #require(TestMultipart.parse(upload.takeOutgoing(), boundary: Self.boundary))
        #expect(parts == [.file(Self.audio), .field("model", "big-whisper")])
    }

    @Test(arguments: [1, 13, 100_000])
    func aStreamAsksForUsageUnlessTheClientSaid(piece: Int) throws {
        let asked = TestMultipart.body(
            boundary: Self.boundary, parts: [.field("model", "w"), .file(Self.audio), .field("stream", "true")])
        let (upload, sent) = try Self.send(asked, pieces: piece)
        #expect(upload.stream == true)
        #expect(upload.clientWantsUsage == false)
        #expect(
            TestMultipart.parse(sent, boundary: Self.boundary)
                == [.field("model", "org/whisper-tiny"), .file(Self.audio), .field("stream", "true"), .field("stream_include_usage", "true")])

        let own = TestMultipart.body(
            boundary: Self.boundary, parts: [.field("model", "w"), .field("stream", "1"), .field("stream_include_usage", "TRUE"), .file(Self.audio)])
        let (ownUpload, ownSent) = try Self.send(own, pieces: piece)
        #expect(ownUpload.clientWantsUsage == true)
        #expect(TestMultipart.parse(ownSent, boundary: Self.boundary)?.count == 4)

        let notStreamed = TestMultipart.body(boundary: Self.boundary, parts: [.field("model", "w"), .field("stream", "false"), .file(Self.audio)])
        let (_, plain) = try Self.send(notStreamed, pieces: piece)
        #expect(TestMultipart.parse(plain, boundary: Self.boundary)?.map(\.name) == ["model", "stream", "file"])
    }

    @Test func aSmallUploadIsSentAgainToTheNextUpstream() throws {
        let body = TestMultipart.body(boundary: Self.boundary, parts: [.field("model", "w"), .file(Self.audio)])
        var upload = FormUploadBody(boundary: try MultipartBoundary(Self.boundary), replayLimit: 64 << 10)
        _ = try body.withUnsafeBytes { raw throws(MultipartFormError) in try upload.feed(raw) }
        #expect(upload.startSending(upstreamModel: "first") == true)
        _ = upload.takeOutgoing()
        upload.stopSending()
        #expect(upload.canStartSending == true)
        #expect(upload.startSending(upstreamModel: "second") == true)
        try upload.finish()
        #expect(TestMultipart.parse(upload.takeOutgoing(), boundary: Self.boundary)?.first == .field("model", "second"))
    }

    @Test func aLargeUploadThatReachedAnUpstreamCannotBeSentAgain() throws {
        let body = TestMultipart.body(boundary: Self.boundary, parts: [.field("model", "w"), .file(Self.audio)])
        var upload = FormUploadBody(boundary: try MultipartBoundary(Self.boundary), replayLimit: 1000)
        let head = Array(body[..<200])
        _ = try head.withUnsafeBytes { raw throws(MultipartFormError) in try upload.feed(raw) }
        #expect(upload.startSending(upstreamModel: "first") == true)
        #expect(upload.canStartSending == true)  // 200 bytes: still kept
        let rest = Array(body[200...])
        _ = try rest.withUnsafeBytes { raw throws(MultipartFormError) in try upload.feed(raw) }
        #expect(upload.canStartSending == false)
        upload.stopSending()
        #expect(upload.startSending(upstreamModel: "second") == false)
        #expect(upload.takeOutgoing().isEmpty)
    }

    @Test func anUpstreamNameThatWouldBreakTheFormIsRefused() throws {
        let body = TestMultipart.body(boundary: Self.boundary, parts: [.field("model", "w"), .file(Self.audio)])
        var upload = FormUploadBody(boundary: try MultipartBoundary(Self.boundary))
        _ = try body.withUnsafeBytes { raw throws(MultipartFormError) in try upload.feed(raw) }
        #expect(upload.startSending(upstreamModel: "a\r\n--x-boundary-42") == false)
    }

    @Test func aFormWithoutModelOrEndIsReported() throws {
        let noModel = TestMultipart.body(boundary: Self.boundary, parts: [.file(Self.audio)])
        let (upload, _) = try Self.send(noModel, pieces: 512)
        #expect(upload.clientModel == nil)
        #expect(upload.canStartSending == false)

        var cut = FormUploadBody(boundary: try MultipartBoundary(Self.boundary))
        let half = Array(noModel[..<(noModel.count / 2)])
        _ = try half.withUnsafeBytes { raw throws(MultipartFormError) in try cut.feed(raw) }
        #expect(throws: MultipartFormError.incompleteBody) { try cut.finish() }
    }

    @Test func whatIsReadAfterADiscardGoesNowhere() throws {
        let body = TestMultipart.body(boundary: Self.boundary, parts: [.field("model", "w"), .file(Self.audio)])
        var upload = FormUploadBody(boundary: try MultipartBoundary(Self.boundary))
        let head = Array(body[..<100])
        _ = try head.withUnsafeBytes { raw throws(MultipartFormError) in try upload.feed(raw) }
        upload.discard()
        let rest = Array(body[100...])
        _ = try rest.withUnsafeBytes { raw throws(MultipartFormError) in try upload.feed(raw) }
        try upload.finish()
        #expect(upload.takeOutgoing().isEmpty)
        #expect(upload.canStartSending == false)
        #expect(upload.hasEnded == true)
    }
}
