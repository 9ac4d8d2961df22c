import Foundation
import NIOEmbedded
import Testing

@testable import Worker

/// The access line is written byte by byte: it must still be one JSON object per line with
/// every field, escaped, in the log's shape.
@Suite struct AccessLogTests {
    @Test func aLineIsOneJSONObjectWithEveryFieldEscaped() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }
        let loop = EmbeddedEventLoop()
        let log = AccessLog(eventLoop: loop, fd: fds[1])
        var fields = AccessFields()
        fields.key = "team \"a\"\\b"
        fields.model = "llama\n3"
        fields.upstream = "gpu-1"
        fields.error = "client_closed_request"
        fields.promptTokens = 12
        fields.completionTokens = 34
        log.record(requestID: "req_1", method: "POST", route: "/v1/chat/completions", status: 499, seconds: 0.0123456, bytes: 789, fields: fields)
        log.record(requestID: "req_2", method: "GET", route: "/health", status: 200, seconds: 0, bytes: 15, fields: AccessFields())
        loop.run()  // the flush at the end of the tick
        close(fds[1])
        let data = FileHandle(fileDescriptor: fds[0]).readDataToEndOfFile()
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 2)
        let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(first["msg"] as? String == "request")
        #expect(first["proc"] as? String == "worker")
        #expect(first["level"] as? String == "info")
        #expect(first["key"] as? String == "team \"a\"\\b")
        #expect(first["model"] as? String == "llama\n3")
        #expect(first["upstream"] as? String == "gpu-1")
        #expect(first["error"] as? String == "client_closed_request")
        #expect(first["prompt_tokens"] as? Int == 12)
        #expect(first["completion_tokens"] as? Int == 34)
        #expect(first["status"] as? Int == 499)
        #expect(first["bytes"] as? Int == 789)
        #expect(first["duration_ms"] as? Double == 12.346)
        #expect(first["route"] as? String == "/v1/chat/completions")
        #expect(first["request_id"] as? String == "req_1")
        let ts = try #require(first["ts"] as? String)
        #expect(ts.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"#, options: .regularExpression) != nil, "\(ts)")
        let second = try #require(try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any])
        #expect(second["key"] == nil && second["model"] == nil && second["prompt_tokens"] == nil)
        #expect(second["status"] as? Int == 200)
    }

}
