import Testing

@testable import Shared

#if canImport(Glibc)
    import Glibc
#endif

/// Where each API family keeps its model and usage in answers and stream events, and the
/// shared table of stored responses.
@Suite struct APIFamilyShapesTests {
    func usage(_ json: String, _ family: APIFamily) -> TokenUsage? { TokenUsage.find(in: Array(json.utf8), keys: family.usage) }

    @Test func responsesUsageIsReadAtTheTopOrInTheEventsResponse() {
        #expect(usage(#"{"id":"resp_1","object":"response","usage":{"input_tokens":7,"output_tokens":3}}"#, .responses) == .init(prompt: 7, completion: 3))
        let completed =
            #"{"type":"response.completed","response":{"id":"resp_1","usage":{"input_tokens":9,"output_tokens":4,"total_tokens":13}},"sequence_number":9}"#
        #expect(usage(completed, .responses) == .init(prompt: 9, completion: 4))
        #expect(usage(#"{"type":"response.created","response":{"id":"r","usage":null}}"#, .responses) == nil)
        #expect(usage(completed, .openAI) == nil, "OpenAI chat reads the top level only")
    }

    @Test func anthropicUsageIsInMessageStartAndMessageDelta() {
        let start = #"{"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":12,"output_tokens":1}}}"#
        #expect(usage(start, .anthropic) == .init(prompt: 12, completion: 1))
        let delta = #"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#
        #expect(usage(delta, .anthropic) == .init(prompt: 0, completion: 15))
    }

    @Test func theModelIsRenamedWhereTheFamilyKeepsIt() {
        func renamed(_ json: String, _ container: String?) -> String {
            String(decoding: JSONSplice.replacingModel(in: Array(json.utf8), with: "client", container: container), as: UTF8.self)
        }
        #expect(renamed(#"{"model":"up","x":1}"#, "response") == #"{"model":"client","x":1}"#)
        #expect(
            renamed(#"{"type":"response.created","response":{"id":"r","model":"up"}}"#, "response")
                == #"{"type":"response.created","response":{"id":"r","model":"client"}}"#)
        #expect(renamed(#"{"type":"message_start","message":{"model":"up"}}"#, "message") == #"{"type":"message_start","message":{"model":"client"}}"#)
        #expect(renamed(#"{"type":"ping"}"#, "message") == #"{"type":"ping"}"#)
        #expect(renamed(#"{"message":"not an object"}"#, "message") == #"{"message":"not an object"}"#)
    }

    @Test func aNamedEventKeepsItsOtherLines() {
        let event = Array("event: response.created\r\nid: 4\ndata: {\"a\":1}\n: comment\n\n".utf8)
        #expect(String(decoding: SSEEventBuffer.otherLines(of: event), as: UTF8.self) == "event: response.created\nid: 4\n: comment\n")
        #expect(SSEEventBuffer.otherLines(of: Array("data: {}\n\n".utf8)).isEmpty)
    }

    @Test func previousResponseIDIsAShortStringOrNothing() throws {
        func id(_ json: String) throws -> String? { try OpenAIRequestBody(bytes: Array(json.utf8)).previousResponseID() }
        #expect(try id(#"{"model":"m"}"#) == nil)
        #expect(try id(#"{"model":"m","previous_response_id":null}"#) == nil)
        #expect(try id(#"{"model":"m","previous_response_id":"resp_9"}"#) == "resp_9")
        for bad in [#"7"#, #"{"a":1}"#, #"["resp_1"]"#, #""""#, #""a b""#, "\"" + String(repeating: "r", count: 257) + "\""] {
            #expect(throws: GatewayError.self, "\(bad)") { try id(#"{"model":"m","previous_response_id":"# + bad + "}") }
        }
    }

    @Test func theResponseOwnersTableIsSharedBoundedAndForgetsOldIDs() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let other = try SharedSegment.attach(fileDescriptor: dup(segment.fileDescriptor))
        segment.responseOwners.record("resp_a", owner: .init(upstream: 3, modelPosition: 1))
        segment.responseOwners.record("resp_b", owner: .init(upstream: 0, modelPosition: nil))
        #expect(other.responseOwners.owner(of: "resp_a") == .init(upstream: 3, modelPosition: 1), "another worker's mapping sees it")
        #expect(other.responseOwners.owner(of: "resp_b") == .init(upstream: 0, modelPosition: nil))
        #expect(other.responseOwners.owner(of: "resp_c") == nil)
        segment.responseOwners.record("resp_a", owner: .init(upstream: 5, modelPosition: 1))
        #expect(other.responseOwners.owner(of: "resp_a")?.upstream == 5)
        // Twice as many ids as the table holds: the newest are all there, old ones forgotten.
        let capacity = ResponseOwners.bucketCount * ResponseOwners.ways
        for i in 0..<(2 * capacity) { segment.responseOwners.record("resp_\(i)", owner: .init(upstream: i % 7, modelPosition: 0)) }
        let recent = (2 * capacity - 100)..<(2 * capacity)
        #expect(recent.filter { segment.responseOwners.owner(of: "resp_\($0)")?.upstream == $0 % 7 }.count >= 95)
        let forgotten = (0..<1000).filter { segment.responseOwners.owner(of: "resp_\($0)") == nil }.count
        #expect(forgotten > 500)
    }

    @Test func aCreatedResponsesIDIsFoundInItsAnswerOrEvent() {
        #expect(ResponseOwners.responseID(inAnswer: Array(#"{"id":"resp_1","object":"response","model":"m"}"#.utf8)) == "resp_1")
        #expect(ResponseOwners.responseID(inAnswer: Array(#"{"id":"chatcmpl-1","object":"chat.completion"}"#.utf8)) == nil)
        #expect(ResponseOwners.responseID(inEvent: Array(#"{"type":"response.created","response":{"id":"resp_2","object":"response"}}"#.utf8)) == "resp_2")
        #expect(ResponseOwners.responseID(inEvent: Array(#"{"type":"response.output_text.delta","delta":"x"}"#.utf8)) == nil)
        let hostile = "{\"object\":\"response\",\"id\":\"" + String(repeating: "x", count: 300) + "\"}"
        #expect(ResponseOwners.responseID(inAnswer: Array(hostile.utf8)) == nil)
    }
}
