import Foundation
import NIOCore
import NIOHTTP1
import Shared

/// The built-in demo model (`--upstream demo`): deterministic text streamed word by word
/// with a small delay, token usage counted, a tool call when tools are offered, and
/// deterministic embeddings. It exists so the gateway can be tried with no GPU; it is only
/// used when asked for by name.
struct DemoModel: Sendable {
    /// Delay between streamed words.
    var wordDelay: TimeAmount = .milliseconds(20)

    func respond(route: Route, body: OpenAIRequestBody, clientModel: String, writer: ResponseWriter) {
        let object = (try? JSONSerialization.jsonObject(with: Data(body.bytes))) as? [String: Any] ?? [:]
        switch route {
        case .embeddings:
            writer.sendJSON(status: 200, embeddings(object, model: clientModel))
        case .chatCompletions, .completions:
            complete(route: route, object: object, body: body, model: clientModel, writer: writer)
        default:
            writer.send(error: .routeNotFound(method: "POST", path: route.template))
        }
    }

    /// A transcription or translation (the upload was read and dropped): the demo model
    /// hears nothing, and says so, whole or as a stream of `transcription.chunk` events.
    func transcribe(route: Route, stream: Bool, clientModel: String, writer: ResponseWriter) {
        let text = "The llm-gateway demo model does not transcribe audio. Point --upstream at vLLM serving a speech model."
        let object = route == .translations ? "translation.chunk" : "transcription.chunk"
        guard stream else {
            let usage = route == .translations ? "" : #","usage":{"type":"duration","seconds":0}"#
            writer.sendJSON(status: 200, #"{"text":\#(JSON.quoted(text))\#(usage)}"#)
            return
        }
        let id = "trsc-demo" + String(UInt32.random(in: .min ... .max), radix: 16)
        let created = Int(Date().timeIntervalSince1970)
        writer.writeEventStreamHead()
        writer.write(
            ByteBuffer(
                string: #"data: {"id":"\#(id)","object":"\#(object)","created":\#(created),"model":\#(JSON.quoted(clientModel)),"#
                    + #""choices":[{"delta":{"content":\#(JSON.quoted(text))},"finish_reason":"stop","stop_reason":null}]}"# + "\n\ndata: [DONE]\n\n"))
        writer.end()
    }

    private func complete(route: Route, object: [String: Any], body: OpenAIRequestBody, model: String, writer: ResponseWriter) {
        let chat = route == .chatCompletions
        let prompt = chat ? lastUserText(object) : (object["prompt"] as? String ?? "")
        let promptTokens = max(1, Self.words(in: chat ? allMessageText(object) : prompt).count)
        let maxTokens = (object["max_tokens"] as? Int) ?? (object["max_completion_tokens"] as? Int) ?? 64
        let toolName = chat ? offeredTool(object) : nil
        let echo = prompt.split(separator: " ").prefix(12).joined(separator: " ")
        var words = Self.words(
            in: "Hello from the llm-gateway demo model. You said: \(echo.isEmpty ? "nothing" : echo). Point --upstream at vLLM for real answers.")
        var finish = "stop"
        if words.count > maxTokens {
            words = Array(words.prefix(max(0, maxTokens)))
            finish = "length"
        }
        let id = (chat ? "chatcmpl-demo" : "cmpl-demo") + String(UInt32.random(in: .min ... .max), radix: 16)
        let created = Int(Date().timeIntervalSince1970)
        let completionTokens = toolName == nil ? words.count : 8
        let usage = #"{"prompt_tokens":\#(promptTokens),"completion_tokens":\#(completionTokens),"total_tokens":\#(promptTokens + completionTokens)}"#
        let objectName = chat ? "chat.completion" : "text_completion"
        let toolCall = toolName.map { name in
            #"{"index":0,"id":"call_demo\#(String(UInt32.random(in: .min ... .max), radix: 16))","type":"function","function":{"name":\#(JSON.quoted(name)),"arguments":"{}"}}"#
        }

        if !body.stream {
            let choice: String
            if chat {
                let message =
                    toolCall.map { #"{"role":"assistant","content":null,"tool_calls":[\#($0)]}"# }
                    ?? #"{"role":"assistant","content":\#(JSON.quoted(words.joined()))}"#
                choice = #"{"index":0,"message":\#(message),"finish_reason":"\#(toolCall == nil ? finish : "tool_calls")"}"#
            } else {
                choice = #"{"index":0,"text":\#(JSON.quoted(words.joined())),"finish_reason":"\#(finish)"}"#
            }
            writer.sendJSON(
                status: 200,
                #"{"id":"\#(id)","object":"\#(objectName)","created":\#(created),"model":\#(JSON.quoted(model)),"choices":[\#(choice)],"usage":\#(usage)}"#)
            return
        }

        let chunkObject = chat ? "chat.completion.chunk" : "text_completion"
        func event(_ choice: String, usage: String? = nil) -> ByteBuffer {
            let choices = choice.isEmpty ? "[]" : "[\(choice)]"
            let tail = usage.map { #","usage":\#($0)"# } ?? ""
            return ByteBuffer(
                string: #"data: {"id":"\#(id)","object":"\#(chunkObject)","created":\#(created),"model":\#(JSON.quoted(model)),"choices":\#(choices)\#(tail)}"#
                    + "\n\n")
        }
        writer.writeEventStreamHead()
        if chat { writer.write(event(#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#)) }
        let includeUsage = body.includeUsage
        func finishStream() {
            let last = chat ? #"{"index":0,"delta":{},"finish_reason":"\#(finish)"}"# : #"{"index":0,"text":"","finish_reason":"\#(finish)"}"#
            writer.write(event(last))
            if includeUsage { writer.write(event("", usage: usage)) }
            writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            writer.end()
        }
        // One word per `wordDelay`, each flushed on its own; the writer drops the rest if
        // the client hangs up.
        func emit(_ index: Int) {
            guard index < words.count else { return finishStream() }
            writer.schedule(in: wordDelay) {
                let word = words[index]
                let delta =
                    chat
                    ? #"{"index":0,"delta":{"content":\#(JSON.quoted(word))},"finish_reason":null}"#
                    : #"{"index":0,"text":\#(JSON.quoted(word)),"finish_reason":null}"#
                writer.write(event(delta))
                writer.flush()
                emit(index + 1)
            }
        }
        if let toolCall {
            writer.write(event(#"{"index":0,"delta":{"tool_calls":[\#(toolCall)]},"finish_reason":null}"#))
            finish = "tool_calls"
            finishStream()
        } else {
            writer.flush()
            emit(0)
        }
    }

    private func embeddings(_ object: [String: Any], model: String) -> String {
        let inputs: [String] = (object["input"] as? [String]) ?? [(object["input"] as? String) ?? ""]
        var data: [String] = []
        var tokens = 0
        for (index, text) in inputs.enumerated() {
            tokens += max(1, Self.words(in: text).count)
            var state: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in text.utf8 { state = (state ^ UInt64(byte)) &* 0x100_0000_01b3 }
            var generator = SplitMix64(seed: state)
            let vector = (0..<8).map { _ in String(format: "%.6f", Double(generator.next() % 2_000_001) / 1_000_000 - 1) }
            data.append(#"{"object":"embedding","index":\#(index),"embedding":[\#(vector.joined(separator: ","))]}"#)
        }
        return
            #"{"object":"list","data":[\#(data.joined(separator: ","))],"model":\#(JSON.quoted(model)),"usage":{"prompt_tokens":\#(tokens),"total_tokens":\#(tokens)}}"#
    }

    private func lastUserText(_ object: [String: Any]) -> String {
        let messages = object["messages"] as? [[String: Any]] ?? []
        guard let last = messages.last(where: { $0["role"] as? String == "user" }) else { return "" }
        return Self.text(of: last["content"])
    }

    private func allMessageText(_ object: [String: Any]) -> String {
        (object["messages"] as? [[String: Any]] ?? []).map { Self.text(of: $0["content"]) }.joined(separator: " ")
    }

    private func offeredTool(_ object: [String: Any]) -> String? {
        if let choice = object["tool_choice"] as? String, choice == "none" { return nil }
        guard let tools = object["tools"] as? [[String: Any]], let first = tools.first,
            let function = first["function"] as? [String: Any], let name = function["name"] as? String
        else { return nil }
        if let choice = object["tool_choice"] as? [String: Any], let function = choice["function"] as? [String: Any],
            let named = function["name"] as? String
        {
            return named
        }
        return name
    }

    static func text(of content: Any?) -> String {
        if let s = content as? String { return s }
        if let parts = content as? [[String: Any]] { return parts.compactMap { $0["text"] as? String }.joined(separator: " ") }
        return ""
    }

    /// Words with their following space, so joining them gives back the text.
    static func words(in text: String) -> [String] {
        var result: [String] = []
        var current = ""
        for character in text {
            current.append(character)
            if character == " " {
                result.append(current)
                current = ""
            }
        }
        if !current.isEmpty { result.append(current) }
        return result
    }
}
