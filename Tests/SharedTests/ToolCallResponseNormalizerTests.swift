import Foundation
import Testing

@testable import Shared

@Suite("Tool-call response normaliser")
struct ToolCallResponseNormalizerTests {
    private let hermes = HermesToolCallParser(idGenerator: .seeded(7))

    private static let weatherTool =
        #"{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}"#

    private func body(_ text: String) throws -> OpenAIRequestBody {
        try OpenAIRequestBody(bytes: Array(text.utf8))
    }

    private func request(tools: String? = nil, toolChoice: String? = nil) throws -> OpenAIRequestBody {
        var text = #"{"model":"qwen","messages":[{"role":"user","content":"weather in Paris?"}]"#
        if let tools { text += #","tools":"# + tools }
        if let toolChoice { text += #","tool_choice":"# + toolChoice }
        return try body(text + "}")
    }

    // MARK: - Pre-flight

    @Test("requests without tools, and valid tool requests, pass pre-flight")
    func preflightPasses() throws {
        #expect(ToolCallResponseNormalizer.preflight(body: try request(), parserName: "none") == nil)
        #expect(ToolCallResponseNormalizer.preflight(body: try request(), parserName: "hermes") == nil)
        let valid = try request(tools: "[\(Self.weatherTool)]", toolChoice: #"{"type":"function","function":{"name":"get_weather"}}"#)
        #expect(ToolCallResponseNormalizer.preflight(body: valid, parserName: "hermes") == nil)
        #expect(ToolCallResponseNormalizer.preflight(body: try request(toolChoice: #""none""#), parserName: "none") == nil)
    }

    /// 20,000 tools in a 1 MiB body cost 1.2 s of event-loop time (a quadratic uniqueness
    /// check after a full decode); now they are counted, not decoded (issue 20, finding 1).
    @Test("more tools than the cap is a 400 naming tools, decided without decoding them")
    func tooManyTools() throws {
        let tools = (0..<20_000).map { #"{"type":"function","function":{"name":"f\#($0)","parameters":{"type":"object"}}}"# }
        let many = try request(tools: "[" + tools.joined(separator: ",") + "]")
        let refusal = ToolCallResponseNormalizer.preflight(body: many, parserName: "hermes", maxTools: 128)
        #expect(refusal?.param == "tools")
        #expect(refusal?.code == "too_many_tools")
        #expect(refusal?.message.contains("20000") == true)
        let atTheCap = try request(tools: "[" + tools.prefix(128).joined(separator: ",") + "]")
        #expect(ToolCallResponseNormalizer.preflight(body: atTheCap, parserName: "hermes", maxTools: 128) == nil)
        let duplicate = try request(tools: "[" + ([String](repeating: tools[0], count: 2)).joined(separator: ",") + "]")
        #expect(ToolCallResponseNormalizer.preflight(body: duplicate, parserName: "hermes")?.param == "tools[1].function.name")
    }

    @Test("a bad function name is a 400 naming tools[0].function.name")
    func preflightBadName() throws {
        let bad = try request(tools: #"[{"type":"function","function":{"name":"get weather!"}}]"#)
        let error = try #require(ToolCallResponseNormalizer.preflight(body: bad, parserName: "hermes"))
        #expect(error.status == 400)
        #expect(error.type == "invalid_request_error")
        #expect(error.param == "tools[0].function.name")
        #expect(error.code == "invalid_value")
        #expect(error.message.contains("get weather!"))
    }

    @Test("tool_choice naming an undeclared tool is a 400 naming tool_choice.function.name")
    func preflightUndeclaredChoice() throws {
        let bad = try request(tools: "[\(Self.weatherTool)]", toolChoice: #"{"type":"function","function":{"name":"get_time"}}"#)
        let error = try #require(ToolCallResponseNormalizer.preflight(body: bad, parserName: "hermes"))
        #expect(error.status == 400)
        #expect(error.param == "tool_choice.function.name")
        #expect(error.message.contains("get_time"))
    }

    @Test("a model with tool_parser none refuses tools with param tools")
    func preflightParserNone() throws {
        let error = try #require(
            ToolCallResponseNormalizer.preflight(body: try request(tools: "[\(Self.weatherTool)]"), parserName: "none"))
        #expect(error.status == 400)
        #expect(error.param == "tools")
        #expect(error.code == "tools_not_supported")
        #expect(error.message.contains("no tool parser configured"))
        #expect(error.message.contains("'qwen'"))
        #expect(error.jsonBody.contains(#""param":"tools""#))
    }

    @Test("the response parser applies only to tool requests on a calling family")
    func responseParserSelection() throws {
        let tools = try request(tools: "[\(Self.weatherTool)]")
        #expect(ToolCallResponseNormalizer.responseParser(body: tools, parserName: "hermes")?.name == "hermes")
        #expect(ToolCallResponseNormalizer.responseParser(body: tools, parserName: "none") == nil)
        #expect(ToolCallResponseNormalizer.responseParser(body: try request(), parserName: "hermes") == nil)
        let choiceNone = try request(tools: "[\(Self.weatherTool)]", toolChoice: #""none""#)
        #expect(ToolCallResponseNormalizer.responseParser(body: choiceNone, parserName: "hermes") == nil)
        let nullTools = try body(#"{"model":"qwen","messages":[],"tools":null}"#)
        #expect(ToolCallResponseNormalizer.responseParser(body: nullTools, parserName: "hermes") == nil)
    }

    // MARK: - Non-streamed answers

    static let callText =
        "Let me check the weather.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
        + "<tool_call>{\"name\":\"get_time\",\"arguments\":{\"tz\":\"CET\"}}</tool_call> Done."

    /// A vLLM-style chat completion whose message content is `content` (a JSON value).
    static func completion(content: String, toolCalls: String = "[]", finish: String = "stop", choices: Int = 1) -> [UInt8] {
        let choice = { (index: Int) in
            #"{"index":\#(index),"message":{"role":"assistant","content":\#(content),"refusal":null,"tool_calls":\#(toolCalls),"reasoning_content":null},"logprobs":null,"finish_reason":"\#(finish)","stop_reason":null}"#
        }
        let all = (0..<choices).map(choice).joined(separator: ",")
        return Array(
            #"{"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,"model":"qwen","choices":[\#(all)],"service_tier":null,"usage":{"prompt_tokens":12,"total_tokens":40,"completion_tokens":28,"prompt_tokens_details":null},"prompt_logprobs":null}"#
                .utf8)
    }

    private func object(_ bytes: [UInt8]) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    @Test("raw Hermes text becomes tool_calls, the rest stays content, finish_reason is tool_calls")
    func normalizesHermesText() throws {
        let input = Self.completion(content: JSON.quoted(Self.callText))
        let output = ToolCallResponseNormalizer.normalizeCompletion(input, parser: hermes)
        #expect(output != input)
        let answer = try object(output)
        let choice = try #require((answer["choices"] as? [[String: Any]])?.first)
        #expect(choice["finish_reason"] as? String == "tool_calls")
        let message = try #require(choice["message"] as? [String: Any])
        #expect(message["content"] as? String == hermes.parse(Self.callText).content)
        #expect(message["content"] as? String == "Let me check the weather. Done.")
        let calls = try #require(message["tool_calls"] as? [[String: Any]])
        #expect(calls.count == 2)
        let first = try #require(calls.first)
        #expect(first["type"] as? String == "function")
        #expect((first["id"] as? String)?.hasPrefix("call_") == true)
        let function = try #require(first["function"] as? [String: Any])
        #expect(function["name"] as? String == "get_weather")
        #expect(function["arguments"] as? String == #"{"city":"Paris"}"#)
        #expect(message["role"] as? String == "assistant")
        #expect(message.keys.contains("reasoning_content"))

        // Everything outside `choices` keeps its bytes.
        let before = try JSONScanner.objectMembers(input)
        let after = try JSONScanner.objectMembers(output)
        #expect(before.map(\.key) == after.map(\.key))
        for (old, new) in zip(before, after) where old.key != "choices" {
            #expect(input[old.value] == output[new.value], "member \(old.key)")
        }
    }

    @Test("a message that is only a call gets content null")
    func callOnlyHasNullContent() throws {
        let text = #"<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>"#
        let output = ToolCallResponseNormalizer.normalizeCompletion(Self.completion(content: JSON.quoted(text)), parser: hermes)
        let choice = try #require((try object(output)["choices"] as? [[String: Any]])?.first)
        let message = try #require(choice["message"] as? [String: Any])
        #expect(message["content"] is NSNull)
        #expect((message["tool_calls"] as? [Any])?.count == 1)
    }

    @Test(
        "answers with nothing to parse are returned byte for byte",
        arguments: [
            "plain text", "null content", "structured tool_calls", "error body", "not JSON",
        ])
    func untouched(kind: String) {
        let input: [UInt8] =
            switch kind {
            case "plain text": Self.completion(content: JSON.quoted("Plain text, 2 < 3 and a <tool_cal> look-alike."))
            case "null content": Self.completion(content: "null")
            case "structured tool_calls":
                Self.completion(
                    content: JSON.quoted(Self.callText),
                    toolCalls: #"[{"id":"chatcmpl-tool-1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]"#,
                    finish: "tool_calls")
            case "error body": Array(#"{"error":{"message":"bad","type":"BadRequestError","param":null,"code":400}}"#.utf8)
            default: Array("not json".utf8)
            }
        #expect(ToolCallResponseNormalizer.normalizeCompletion(input, parser: hermes) == input)
    }

    @Test("only the choices holding calls change")
    func severalChoices() throws {
        var input = Self.completion(content: JSON.quoted(Self.callText), choices: 2)
        // Turn the second choice into plain text.
        let text = String(decoding: input, as: UTF8.self)
        let second = try #require(text.range(of: #"{"index":1"#))
        let prefix = text[..<second.lowerBound]
        let suffix = text[second.lowerBound...].replacingOccurrences(of: JSON.quoted(Self.callText), with: #""plain""#)
        input = Array((prefix + suffix).utf8)
        let choices = try #require(try object(ToolCallResponseNormalizer.normalizeCompletion(input, parser: hermes))["choices"] as? [[String: Any]])
        #expect(choices.map { $0["finish_reason"] as? String } == ["tool_calls", "stop"])
        #expect((choices[1]["message"] as? [String: Any])?["content"] as? String == "plain")
    }

    // MARK: - Streamed answers

    /// A vLLM-like stream: role chunk, one chunk per piece, the finishing chunk, usage, `[DONE]`.
    static func stream(_ pieces: [String], finish: String? = "stop", structured: Bool = false) -> [[UInt8]] {
        func chunk(_ choices: String, usage: String? = nil) -> [UInt8] {
            let usagePart = usage.map { #","usage":\#($0)"# } ?? ""
            return Array(
                #"data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"qwen","choices":[\#(choices)]\#(usagePart)}"#
                    .utf8) + [0x0A, 0x0A]
        }
        var events = [chunk(#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#)]
        for piece in pieces {
            events.append(chunk(#"{"index":0,"delta":{"content":\#(JSON.quoted(piece))},"logprobs":null,"finish_reason":null}"#))
        }
        if structured {
            events.append(
                chunk(
                    #"{"index":0,"delta":{"tool_calls":[{"index":0,"id":"chatcmpl-tool-1","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}"#
                ))
            events.append(
                chunk(
                    #"{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Paris\"}"}}]},"logprobs":null,"finish_reason":null}"#))
        }
        if let finish {
            events.append(chunk(#"{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"\#(finish)","stop_reason":null}"#))
        }
        events.append(chunk("", usage: #"{"prompt_tokens":12,"total_tokens":40,"completion_tokens":28}"#))
        events.append(Array("data: [DONE]\n\n".utf8))
        return events
    }

    /// What an OpenAI client rebuilds from a stream, for choice 0.
    struct Rebuilt: Equatable {
        var content: String?
        var calls: [ToolCall] = []
        var finishReason: String?
        var sawDone = false
    }

    /// Rebuilds choice 0 from SSE events, checking every event's framing and envelope.
    static func rebuild(_ events: [[UInt8]]) throws -> Rebuilt {
        var rebuilt = Rebuilt()
        var content = ""
        for event in events {
            #expect(event.starts(with: Array("data: ".utf8)) && event.suffix(2) == [0x0A, 0x0A])
            let data = try #require(SSEEventBuffer.data(of: event))
            if data == Array("[DONE]".utf8) {
                rebuilt.sawDone = true
                continue
            }
            #expect(!rebuilt.sawDone, "event after [DONE]")
            let chunk = try #require(try JSONSerialization.jsonObject(with: Data(data)) as? [String: Any])
            #expect(chunk["id"] as? String == "chatcmpl-abc")
            #expect(chunk["object"] as? String == "chat.completion.chunk")
            #expect(chunk["created"] as? Int == 1_700_000_000)
            #expect(chunk["model"] as? String == "qwen")
            for choice in try #require(chunk["choices"] as? [[String: Any]]) {
                #expect(choice["index"] as? Int == 0)
                let delta = try #require(choice["delta"] as? [String: Any])
                content += delta["content"] as? String ?? ""
                for entry in delta["tool_calls"] as? [[String: Any]] ?? [] {
                    let index = try #require(entry["index"] as? Int)
                    let function = entry["function"] as? [String: Any] ?? [:]
                    if let id = entry["id"] as? String {
                        #expect(index == rebuilt.calls.count)
                        #expect(entry["type"] as? String == "function")
                        rebuilt.calls.append(ToolCall(id: id, name: function["name"] as? String ?? "", arguments: ""))
                    }
                    rebuilt.calls[index].function.arguments += function["arguments"] as? String ?? ""
                }
                if let reason = choice["finish_reason"] as? String {
                    #expect(rebuilt.finishReason == nil, "two finish reasons")
                    rebuilt.finishReason = reason
                }
            }
        }
        rebuilt.content = content.isEmpty ? nil : content
        return rebuilt
    }

    /// What the non-streamed normalisation of `text` gives, in the same shape.
    func expected(for text: String, parser: (any ToolCallParser)? = nil) throws -> Rebuilt {
        let output = ToolCallResponseNormalizer.normalizeCompletion(
            Self.completion(content: JSON.quoted(text)), parser: parser ?? hermes)
        let choice = try #require((try object(output)["choices"] as? [[String: Any]])?.first)
        let message = try #require(choice["message"] as? [String: Any])
        let calls = (message["tool_calls"] as? [[String: Any]] ?? []).map { call in
            let function = call["function"] as? [String: Any] ?? [:]
            return ToolCall(
                id: call["id"] as? String ?? "", name: function["name"] as? String ?? "",
                arguments: function["arguments"] as? String ?? "")
        }
        return Rebuilt(content: message["content"] as? String, calls: calls, finishReason: choice["finish_reason"] as? String, sawDone: true)
    }

    private func run(_ events: [[UInt8]], parser: (any ToolCallParser)? = nil) -> [[UInt8]] {
        var normalizer = ToolCallStreamNormalizer(parser: parser ?? hermes)
        var out = events.flatMap { normalizer.transform(event: $0) }
        out += normalizer.finish()
        return out
    }

    @Test("a stream split at every boundary rebuilds the non-streamed normalisation")
    func streamMatchesWholeAtEveryBoundary() throws {
        let text = Self.callText
        let want = try expected(for: text)
        #expect(want.calls.count == 2 && want.finishReason == "tool_calls")
        for chunking in ToolCallTestSupport.exhaustiveChunkings(of: text, threeWayLimit: 0) {
            let got = try Self.rebuild(run(Self.stream(chunking)))
            #expect(got == want, "chunks: \(chunking)")
            if got != want { break }
        }
    }

    @Test("streams of every parser fixture rebuild the non-streamed normalisation")
    func streamMatchesWholeForFixtures() throws {
        var random = ToolCallTestRandom(seed: 11)
        for fixture in ToolCallFixtures.all {
            let parser = ToolCallTestSupport.parser(named: fixture.family)
            let want = try expected(for: fixture.input, parser: parser)
            #expect(want.content == fixture.content, "\(fixture.family): \(fixture.name)")
            #expect(want.calls.map(\.function.name) == fixture.calls.map(\.name), "\(fixture.family): \(fixture.name)")
            for chunking in ToolCallTestSupport.randomChunkings(of: fixture.input, count: 20, using: &random) {
                let got = try Self.rebuild(run(Self.stream(chunking), parser: parser))
                #expect(got.content == want.content && got.calls == want.calls, "\(fixture.family): \(fixture.name): \(chunking)")
                #expect(got.finishReason == want.finishReason, "\(fixture.family): \(fixture.name)")
            }
        }
    }

    @Test("content before a call is forwarded at once")
    func contentBeforeCallIsImmediate() throws {
        var normalizer = ToolCallStreamNormalizer(parser: hermes)
        let events = Self.stream(["Let me check", " the weather.", "\n<tool_", "call>{\"name\": \"get_weather\"}</tool_call>"])
        #expect(normalizer.transform(event: events[0]) == [events[0]])
        #expect(normalizer.transform(event: events[1]) == [events[1]])
        #expect(normalizer.transform(event: events[2]) == [events[2]])
        #expect(normalizer.transform(event: events[3]) == [])
        let call = normalizer.transform(event: events[4])
        #expect(call.count == 2)
        let rebuilt = try Self.rebuild(call)
        #expect(rebuilt.calls.map(\.function.name) == ["get_weather"])
        #expect(rebuilt.calls.first?.function.arguments == "{}")
        #expect(rebuilt.finishReason == nil)
        let finish = normalizer.transform(event: events[5])
        #expect(try Self.rebuild(finish).finishReason == "tool_calls")
        #expect(normalizer.transform(event: events[6]) == [events[6]])
        #expect(normalizer.transform(event: events[7]) == [events[7]])
    }

    @Test("plain text streams and structured tool_calls pass through byte for byte")
    func passThrough() {
        for events in [
            Self.stream(["The quick", " brown <b>fox</b>", " 2 < 3"]),
            Self.stream(["Checking."], finish: "tool_calls", structured: true),
        ] {
            #expect(run(events) == events)
        }
    }

    @Test("raw text held back before structured tool_calls is released, then the choice passes through")
    func structuredAfterHeldBackText() throws {
        let events = Self.stream(["Checking <tool"], finish: "tool_calls", structured: true)
        let out = run(events)
        let rebuilt = try Self.rebuild(out)
        #expect(rebuilt.content == "Checking <tool")
        #expect(rebuilt.calls.map(\.id) == ["chatcmpl-tool-1"])
        #expect(rebuilt.finishReason == "tool_calls")
        // The chunk that carried the first structured delta is rebuilt (it follows released
        // text); everything after it is the upstream's bytes.
        #expect(Array(out.suffix(4)) == Array(events.suffix(4)))
    }

    @Test("held-back text is released before [DONE] when no finish_reason came, and at finish()")
    func releasesHeldBackText() throws {
        var normalizer = ToolCallStreamNormalizer(parser: hermes)
        let events = Self.stream(["Hi <tool_ca"], finish: nil)
        var out = events.dropLast().flatMap { normalizer.transform(event: $0) }
        #expect(try Self.rebuild(out).content == "Hi")
        let done = normalizer.transform(event: events[events.count - 1])
        #expect(done.last == events.last)
        out += done
        let rebuilt = try Self.rebuild(out)
        #expect(rebuilt.content == "Hi <tool_ca" && rebuilt.sawDone && rebuilt.finishReason == nil)
        #expect(normalizer.finish() == [])

        var cut = ToolCallStreamNormalizer(parser: hermes)
        let partial = events.prefix(2).flatMap { cut.transform(event: $0) }
        #expect(try Self.rebuild(partial + cut.finish()).content == "Hi <tool_ca")
        #expect(cut.finish() == [])
    }

    @Test("usage-only chunks, comments and non-JSON events pass through")
    func otherEvents() {
        var normalizer = ToolCallStreamNormalizer(parser: hermes)
        for event in [
            Array(#"data: {"id":"x","object":"chat.completion.chunk","choices":[],"usage":{"total_tokens":3}}"#.utf8) + [0x0A, 0x0A],
            Array(": keep-alive\n\n".utf8),
            Array("data: not json\n\n".utf8),
        ] {
            #expect(normalizer.transform(event: event) == [event])
        }
    }

    @Test("several choices in one chunk are normalised independently")
    func severalChoicesStreamed() throws {
        var normalizer = ToolCallStreamNormalizer(parser: hermes)
        let call = #"<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>"#
        let chunk =
            Array(
                #"data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"qwen","choices":[{"index":0,"delta":{"content":\#(JSON.quoted(call))},"finish_reason":null},{"index":1,"delta":{"content":"plain"},"finish_reason":null}]}"#
                    .utf8) + [0x0A, 0x0A]
        let out = normalizer.transform(event: chunk)
        #expect(out.count == 2)
        let first = try #require(try JSONSerialization.jsonObject(with: Data(SSEEventBuffer.data(of: out[0]) ?? [])) as? [String: Any])
        let choices = try #require(first["choices"] as? [[String: Any]])
        #expect(choices.map { $0["index"] as? Int } == [0, 1])
        #expect((choices[1]["delta"] as? [String: Any])?["content"] as? String == "plain")
        #expect((choices[0]["delta"] as? [String: Any])?["tool_calls"] != nil)
    }
}
