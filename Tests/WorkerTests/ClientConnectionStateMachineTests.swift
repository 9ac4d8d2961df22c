import HTTP1
import NIOCore
import NIOHTTP1
import Testing

@testable import Worker

/// A client's bytes as the connection reads them: one parser across reads, so a request can
/// be split where a test wants.
struct ClientWire {
    var parser = HTTP1Parser<Worker.RequestHead>()

    /// The parts one read of `text` yields.
    mutating func read(_ text: String) throws -> [ClientConnectionStateMachine.RequestPart] {
        parser.feed(ByteBuffer(string: text))
        var parts: [ClientConnectionStateMachine.RequestPart] = []
        while let part = try parser.next() { parts.append(part) }
        return parts
    }
}

/// ``ClientConnectionStateMachine`` without I/O: requests parsed by the real parser, the
/// event loop's clock passed in by hand, and each event's exact action checked.
@Suite struct ClientConnectionStateMachineTests {
    typealias Machine = ClientConnectionStateMachine
    typealias Action = ClientConnectionStateMachine.Action

    /// `seconds` after the connection opened.
    static func at(_ seconds: Double) -> NIODeadline {
        NIODeadline.uptimeNanoseconds(1_000_000_000_000) + .nanoseconds(Int64(seconds * 1e9))
    }

    static func machine(head: Int64 = 10, body: Int64 = 60, idle: Int64 = 30, maxBodyBytes: Int = 1024) -> Machine {
        Machine(timeouts: .init(head: .seconds(head), body: .seconds(body), idle: .seconds(idle)), maxBodyBytes: maxBodyBytes)
    }

    static let health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"

    static func post(_ body: String) -> String {
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    static func heads(_ parts: [Machine.RequestPart]) -> [Worker.RequestHead] {
        parts.compactMap { if case .head(let head) = $0 { head } else { nil } }
    }

    /// A machine answering one whole `GET` (its response is under way).
    static func responding() throws -> (Machine, ClientWire) {
        var machine = Self.machine()
        var wire = ClientWire()
        let parts = try wire.read(Self.health)
        #expect(parts.map { machine.received($0) } == [.startRequest(Self.heads(parts)[0]), .respond])
        #expect(machine.phase == .responding)
        return (machine, wire)
    }

    // MARK: - Deadlines

    @Test func theHeadTimeoutClosesAConnectionThatSendsNoHead() {
        var m = Self.machine()
        #expect(m.channelActive(now: Self.at(0)) == .scheduleCheck(Self.at(10)))
        #expect(m.channelActive(now: Self.at(0)) == .nothing, "told twice (handler added, channel active): one check")
        #expect(m.readHandled(now: Self.at(1)) == .nothing, "a read without a whole head moves nothing")
        #expect(m.deadlineCheck(now: Self.at(10)) == .close)
    }

    @Test func theBodyTimeoutStartsAfterAHeadWhoseBodyDidNotArriveInTheSameRead() throws {
        var m = Self.machine(head: 10, body: 5)
        var wire = ClientWire()
        #expect(m.channelActive(now: Self.at(0)) == .scheduleCheck(Self.at(10)))
        let head = try wire.read("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        #expect(head.map { m.received($0) } == [.startRequest(Self.heads(head)[0]), .appendBody(ByteBuffer(string: "{"))])
        #expect(m.readHandled(now: Self.at(1)) == .scheduleCheck(Self.at(6)), "before the head check: scheduled instead of it")
        #expect(m.deadline == Self.at(6))
        #expect(m.deadlineCheck(now: Self.at(6)) == .close)
    }

    @Test func aRequestThatArrivesWholeArmsNoBodyTimeout() throws {
        var m = Self.machine(head: 10, body: 5)
        var wire = ClientWire()
        _ = m.channelActive(now: Self.at(0))
        let parts = try wire.read(Self.post("{}"))
        #expect(parts.map { m.received($0) } == [.startRequest(Self.heads(parts)[0]), .appendBody(ByteBuffer(string: "{}")), .respond])
        #expect(m.readHandled(now: Self.at(1)) == .nothing)
        #expect(m.deadline == nil, "no limit while the response is under way")
        #expect(m.deadlineCheck(now: Self.at(10)) == .nothing, "the head check lapses")
        #expect(m.checkScheduled == nil)
    }

    @Test func theBodyTimeoutIsDisarmedWhenTheBodyEndsForTheWholeResponse() throws {
        var m = Self.machine(head: 10, body: 5)
        var wire = ClientWire()
        _ = m.channelActive(now: Self.at(0))
        let head = try wire.read("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
        #expect(head.map { m.received($0) } == [.startRequest(Self.heads(head)[0])])
        #expect(m.readHandled(now: Self.at(1)) == .scheduleCheck(Self.at(6)))
        let body = try wire.read("{}")
        #expect(body.map { m.received($0) } == [.appendBody(ByteBuffer(string: "{}")), .respond])
        #expect(m.readHandled(now: Self.at(2)) == .nothing)
        #expect(m.deadline == nil)
        #expect(m.deadlineCheck(now: Self.at(6)) == .nothing, "the response may take as long as the upstream needs")
        #expect(m.deadlineCheck(now: Self.at(600)) == .nothing)
    }

    @Test func anIdleTimeoutStartsAfterAKeepAliveResponseWithNothingInFlight() throws {
        var m = Self.machine(head: 10, idle: 2)
        var wire = ClientWire()
        _ = m.channelActive(now: Self.at(0))
        _ = try wire.read(Self.health).map { m.received($0) }
        #expect(m.responseEnded(keepAlive: true, draining: false, now: Self.at(1)) == .keepAlive(idleCheck: Self.at(3), servePipelined: false))
        #expect(m.phase == .idle)
        #expect(m.deadlineCheck(now: Self.at(3)) == .close)
    }

    @Test func aCheckThatComesBeforeTheDeadlineMovedIsScheduledAgainNotAClose() throws {
        var m = Self.machine(head: 10, idle: 30)
        var wire = ClientWire()
        #expect(m.channelActive(now: Self.at(0)) == .scheduleCheck(Self.at(10)))
        _ = try wire.read(Self.health).map { m.received($0) }
        #expect(
            m.responseEnded(keepAlive: true, draining: false, now: Self.at(1)) == .keepAlive(idleCheck: nil, servePipelined: false),
            "a later deadline only moves the value: the check at 10 s comes first")
        #expect(m.deadline == Self.at(31))
        #expect(m.deadlineCheck(now: Self.at(10)) == .scheduleCheck(Self.at(31)))
        #expect(m.deadlineCheck(now: Self.at(31)) == .close)
    }

    // MARK: - Pipelining

    @Test func requestsPipelinedDuringAResponseWaitAndAreServedAfterItInOrder() throws {
        var m = Self.machine()
        var wire = ClientWire()
        _ = m.channelActive(now: Self.at(0))
        let parts = try wire.read(Self.health + "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" + "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        let heads = Self.heads(parts)
        #expect(heads.map(\.uri) == ["/health", "/v1/models", "/ready"])
        #expect(parts.map { m.received($0) } == [.startRequest(heads[0]), .respond, .nothing, .nothing, .nothing, .nothing])
        #expect(m.pipelinedParts == 4)
        #expect(m.requestsInFlight == 3)
        #expect(m.servePipelined() == nil, "nothing is served while a response is under way")

        #expect(m.responseEnded(keepAlive: true, draining: false, now: Self.at(1)) == .keepAlive(idleCheck: nil, servePipelined: true))
        #expect(m.deadline == nil, "requests in flight: no idle timeout")
        #expect(m.servePipelined() == .startRequest(heads[1]))
        #expect(m.servePipelined() == .respond)
        #expect(m.servePipelined() == nil)

        #expect(m.responseEnded(keepAlive: true, draining: false, now: Self.at(2)) == .keepAlive(idleCheck: nil, servePipelined: true))
        #expect(m.servePipelined() == .startRequest(heads[2]))
        #expect(m.servePipelined() == .respond)
        #expect(m.servePipelined() == nil, "none waits and no read was held")

        #expect(m.responseEnded(keepAlive: true, draining: false, now: Self.at(3)) == .keepAlive(idleCheck: nil, servePipelined: false))
        #expect(m.requestsInFlight == 0)
        #expect(m.deadline == Self.at(33), "the last response ended: the idle timeout runs")
    }

    @Test func readingStopsWhileAPipelinedRequestWaitsAndResumesOnceItIsServed() throws {
        var (m, wire) = try Self.responding()
        #expect(m.readRequested() == .read, "nothing pipelined: reads pass, even during a response")
        let second = try wire.read(Self.health)
        #expect(second.map { m.received($0) } == [.nothing, .nothing])
        #expect(m.readRequested() == .nothing)
        #expect(m.readHeld)
        #expect(m.responseEnded(keepAlive: true, draining: false, now: Self.at(1)) == .keepAlive(idleCheck: nil, servePipelined: true))
        #expect(m.servePipelined() == .startRequest(Self.heads(second)[0]))
        #expect(m.servePipelined() == .respond)
        #expect(m.servePipelined() == .read, "none waits any more: the held read goes on")
        #expect(m.servePipelined() == nil)
        #expect(!m.readHeld)
        #expect(m.readRequested() == .read)
    }

    @Test func tooManyPipelinedPartsCloseTheConnection() throws {
        var (m, wire) = try Self.responding()
        let health = try wire.read(Self.health)
        var actions: [Action] = []
        for _ in 0..<(Machine.maxPipelinedParts / 2) { actions += health.map { m.received($0) } }
        #expect(actions.allSatisfy { $0 == .nothing })
        #expect(m.pipelinedParts == Machine.maxPipelinedParts)
        #expect(m.received(health[0]) == .close)
    }

    @Test func tooManyPipelinedBodyBytesCloseTheConnection() throws {
        var (m, wire) = try Self.responding()
        let head = try wire.read("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
        #expect(head.map { m.received($0) } == [.nothing])
        let limit = m.maxBodyBytes + Machine.maxPipelinedBytes
        #expect(m.received(.body(ByteBuffer(repeating: 0x61, count: limit))) == .nothing, "up to the limit: held")
        #expect(m.received(.body(ByteBuffer(repeating: 0x61, count: 1))) == .close)
    }

    @Test func aPartOutOfOrderClosesTheConnection() {
        var m = Self.machine()
        #expect(m.received(.body(ByteBuffer(string: "x"))) == .close)
        #expect(m.received(.end(nil)) == .close)
    }

    // MARK: - Keep-alive and close

    @Test(arguments: [
        ("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false),
        ("GET /health HTTP/1.0\r\n\r\n", false),
        ("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", true),
    ])
    func theConnectionClosesAfterTheResponseWhenTheRequestSaysSo(request: String, staysOpen: Bool) throws {
        var m = Self.machine(idle: 30)
        var wire = ClientWire()
        let parts = try wire.read(request)
        let head = Self.heads(parts)[0]
        #expect(parts.map { m.received($0) } == [.startRequest(head), .respond])
        let ended = m.responseEnded(keepAlive: head.keepsConnectionAlive, draining: false, now: Self.at(1))
        if staysOpen {
            #expect(ended == .keepAlive(idleCheck: Self.at(31), servePipelined: false))
            #expect(m.phase == .idle)
        } else {
            #expect(ended == .close)
            #expect(m.phase == .closing)
            #expect(m.received(parts[0]) == .discard, "what follows is dropped")
        }
    }

    @Test func aDrainingWorkerClosesTheConnectionAfterTheResponse() throws {
        var (m, wire) = try Self.responding()
        _ = try wire.read(Self.health).map { m.received($0) }
        #expect(m.responseEnded(keepAlive: true, draining: true, now: Self.at(1)) == .close)
        #expect(m.servePipelined() == nil, "the pipelined request is not served")
        #expect(m.readHandled(now: Self.at(1)) == .nothing)
    }

    @Test func aRequestRefusedBeforeItsBodyIsTheConnectionsLastAndItsBodyIsDropped() throws {
        var m = Self.machine()
        var wire = ClientWire()
        let parts = try wire.read("POST /v1/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        #expect(m.received(parts[0]) == .startRequest(Self.heads(parts)[0]))
        m.refusedBeforeBody()
        #expect(m.phase == .responding)
        #expect(m.responseEnded(keepAlive: true, draining: false, now: Self.at(1)) == .close, "whatever the writer says")
        #expect(m.received(parts[1]) == .discard)
    }

    // MARK: - Drain deadline

    @Test func theDrainDeadlineCutsOffAResponseItsProducerCouldNotEnd() throws {
        var (m, _) = try Self.responding()
        #expect(m.drainDeadlineReached() == .tellProducerOfDrain)
        #expect(m.producerToldOfDrain() == .close)
        #expect(m.channelInactive() == .abandonResponse, "the close abandons it: counted and logged")
    }

    @Test func theDrainDeadlineLetsAProducerEndItsResponseAndTheEndCloses() throws {
        var (m, _) = try Self.responding()
        #expect(m.drainDeadlineReached() == .tellProducerOfDrain)
        // The producer ended the stream (an error event and `[DONE]`) while it was told.
        #expect(m.responseEnded(keepAlive: true, draining: false, now: Self.at(1)) == .close, "the response was the last")
        #expect(m.producerToldOfDrain() == .nothing, "nothing left to cut off")
    }

    @Test func theDrainDeadlineClosesAnIdleConnectionAndLeavesABodyBeingReadToTheGrace() throws {
        var idle = Self.machine()
        #expect(idle.drainDeadlineReached() == .close)

        var reading = Self.machine()
        var wire = ClientWire()
        _ = try wire.read("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{").map { reading.received($0) }
        #expect(reading.phase == .readingBody)
        #expect(reading.drainDeadlineReached() == .nothing)
    }

    // MARK: - The client hangs up

    @Test func aClientThatHangsUpMidResponseHasItAbandonedOnce() throws {
        var (m, wire) = try Self.responding()
        #expect(m.channelInactive() == .abandonResponse)
        #expect(m.phase == .closing)
        #expect(m.deadline == nil && m.checkScheduled == nil)
        #expect(try wire.read(Self.health).map { m.received($0) } == [.discard, .discard])
        #expect(m.channelInactive() == .nothing, "abandoned once")

        var idle = Self.machine()
        #expect(idle.channelInactive() == .nothing, "nothing under way: nothing to abandon")
    }

    // MARK: - What the parser refuses

    @Test func aParseErrorWhileIdleIsAnsweredAndTheConnectionClosesAfterTheAnswer() {
        var m = Self.machine()
        #expect(m.parseError(.malformed("invalid request line"), channelActive: true) == .refuse(.malformed("invalid request line")))
        #expect(m.phase == .responding)
        #expect(m.responseEnded(keepAlive: true, draining: false, now: Self.at(1)) == .close)
    }

    @Test func aParseErrorWhileABodyIsReadIsAnswered() throws {
        var m = Self.machine()
        var wire = ClientWire()
        _ = try wire.read("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").map { m.received($0) }
        #expect(m.phase == .readingBody)
        #expect(m.parseError(.headTooLarge, channelActive: true) == .refuse(.headTooLarge))
    }

    @Test func aParseErrorDuringAResponseClosesWithoutAnAnswer() throws {
        var (m, _) = try Self.responding()
        #expect(m.parseError(.versionNotSupported, channelActive: true) == .close)
        #expect(m.phase == .responding, "the response under way is cut off by the close, not ended")
        #expect(m.channelInactive() == .abandonResponse)
    }

    @Test func aParseErrorIsNotAnsweredBehindPipelinedRequestsNorToAClientThatLeft() throws {
        var (m, wire) = try Self.responding()
        _ = try wire.read(Self.health).map { m.received($0) }
        _ = m.responseEnded(keepAlive: true, draining: false, now: Self.at(1))
        #expect(m.phase == .idle && m.pipelinedParts == 2, "between responses, a request still waits")
        #expect(m.parseError(.malformed("x"), channelActive: true) == .close)

        var gone = Self.machine()
        #expect(gone.parseError(.malformed("x"), channelActive: false) == .close)
    }
}

/// An upload's body goes to its producer as it arrives: reading pauses while the producer
/// cannot take more, a hang-up or the drain reaches the producer before the body ended, and
/// an answer that comes before the body's end closes the connection.
@Suite struct StreamedBodyTests {
    typealias Machine = ClientConnectionStateMachine

    static let uploadHead =
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 10\r\n\r\n"

    /// A machine reading an upload's body (its head and 4 of its 10 bytes read).
    static func uploading() throws -> (Machine, ClientWire) {
        var machine = ClientConnectionStateMachineTests.machine()
        var wire = ClientWire()
        let parts = try wire.read(Self.uploadHead + "0123")
        let head = ClientConnectionStateMachineTests.heads(parts)[0]
        #expect(head.contentType == "multipart/form-data; boundary=b")
        #expect(machine.received(parts[0]) == .startRequest(head))
        machine.streamingBody()
        #expect(machine.received(parts[1]) == .appendBody(ByteBuffer(string: "0123")))
        return (machine, wire)
    }

    @Test func readsPauseAndAHeldReadIsPassedOnWhenTheUploadTakesMore() throws {
        var (machine, _) = try Self.uploading()
        #expect(machine.readRequested() == .read)
        machine.pauseBodyReads()
        #expect(machine.readRequested() == .nothing)
        #expect(machine.servePipelined() == nil, "a paused upload is not read by the pipelining path either")
        #expect(machine.resumeBodyReads() == .read)
        #expect(machine.resumeBodyReads() == .nothing, "once")
        machine.pauseBodyReads()
        #expect(machine.resumeBodyReads() == .nothing, "no read was asked for meanwhile")
    }

    @Test func theRestOfTheBodyAndItsEndGoToTheUpload() throws {
        var (machine, wire) = try Self.uploading()
        let parts = try wire.read("456789")
        #expect(parts.map { machine.received($0) } == [.appendBody(ByteBuffer(string: "456789")), .respond])
        #expect(machine.phase == .responding)
        #expect(machine.responseEnded(keepAlive: true, draining: false, now: ClientConnectionStateMachineTests.at(1)) != .close)
        #expect(machine.bodyStreamed == false)
        #expect(machine.phase == .idle)
    }

    @Test func aHangUpMidUploadReachesItsProducer() throws {
        var (machine, _) = try Self.uploading()
        #expect(machine.channelInactive() == .abandonResponse)
    }

    @Test func theDrainDeadlineMidUploadTellsItsProducerThenCloses() throws {
        var (machine, _) = try Self.uploading()
        #expect(machine.drainDeadlineReached() == .tellProducerOfDrain)
        #expect(machine.producerToldOfDrain() == .close)
    }

    @Test func anAnswerBeforeTheBodysEndClosesTheConnection() throws {
        var (machine, wire) = try Self.uploading()
        #expect(machine.responseEnded(keepAlive: true, draining: false, now: ClientConnectionStateMachineTests.at(1)) == .close)
        #expect(machine.phase == .closing)
        let parts = try wire.read("456789")
        #expect(parts.map { machine.received($0) } == [.discard, .discard])
    }

    @Test func aBodyReadWholeIsNeitherStreamedNorPaused() throws {
        var machine = ClientConnectionStateMachineTests.machine()
        var wire = ClientWire()
        let parts = try wire.read(ClientConnectionStateMachineTests.post("{}"))
        _ = machine.received(parts[0])
        machine.pauseBodyReads()
        #expect(machine.bodyReadsPaused == false)
        #expect(machine.readRequested() == .read)
        #expect(machine.channelInactive() == .nothing)
    }
}
