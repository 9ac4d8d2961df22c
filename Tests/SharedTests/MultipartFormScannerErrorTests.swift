import Testing

@testable import Shared

/// Each way a body is refused, at every cut: the same error whatever the chunks, and never
/// the whole body written (a caller forwarding what the scanner writes never completes it).
@Suite struct MultipartFormScannerErrorTests {
    struct Case: CustomStringConvertible, Sendable {
        let name: String
        let body: [UInt8]
        let error: MultipartFormError
        var limits = MultipartFormScanner.Limits()
        var description: String { name }
    }

    static func text(_ body: String) -> [UInt8] { Array(body.utf8) }
    static func part(_ headers: String, _ content: String = "x") -> String { "--b\r\n\(headers)\r\n\r\n\(content)\r\n" }
    static let model = part("Content-Disposition: form-data; name=\"model\"", "m")
    static let file = part("Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"", "RIFF")

    static let cases: [Case] = [
        Case(name: "LF line ends", body: text("--b\nContent-Disposition: form-data; name=model\n\nm\n--b--"), error: .malformedBody("")),
        Case(name: "LF after a part", body: text(model + "--b\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n--b--"), error: .malformedBody("")),
        Case(
            name: "a bare LF in the headers", body: text(part("Content-Disposition: form-data; name=model\nX: y") + "--b--"), error: .malformedPartHeaders("")),
        Case(
            name: "a bare CR in the headers", body: text(part("Content-Disposition: form-data; name=model\rX: y") + "--b--"), error: .malformedPartHeaders("")),
        Case(name: "no colon", body: text(part("Content-Disposition form-data; name=model") + "--b--"), error: .malformedPartHeaders("")),
        Case(name: "folded header", body: text(part("Content-Disposition: form-data;\r\n name=model") + "--b--"), error: .malformedPartHeaders("")),
        Case(name: "no headers", body: text("--b\r\n\r\nvalue\r\n--b--"), error: .malformedPartHeaders("")),
        Case(name: "no Content-Disposition", body: text(part("Content-Type: text/plain") + "--b--"), error: .malformedPartHeaders("")),
        Case(
            name: "two Content-Disposition",
            body: text(part("Content-Disposition: form-data; name=a\r\ncontent-disposition: form-data; name=model") + "--b--"),
            error: .malformedPartHeaders("")),
        Case(name: "not form-data", body: text(part("Content-Disposition: attachment; name=model") + "--b--"), error: .malformedPartHeaders("")),
        Case(name: "no name", body: text(part("Content-Disposition: form-data; filename=a") + "--b--"), error: .malformedPartHeaders("")),
        Case(name: "name twice", body: text(part("Content-Disposition: form-data; name=a; Name=model") + "--b--"), error: .malformedPartHeaders("")),
        Case(name: "name*", body: text(part("Content-Disposition: form-data; name=a; name*=utf-8''model") + "--b--"), error: .malformedPartHeaders("")),
        Case(
            name: "backslash in a quoted name", body: text(part("Content-Disposition: form-data; name=\"mo\\del\"") + "--b--"),
            error: .malformedPartHeaders("")),
        Case(
            name: "backslash-quote hiding a name", body: text(part("Content-Disposition: form-data; filename=\"a\\\"; name=model\"; name=x") + "--b--"),
            error: .malformedPartHeaders("")),
        Case(name: "unterminated quote", body: text(part("Content-Disposition: form-data; name=\"model") + "--b--"), error: .malformedPartHeaders("")),
        Case(name: "a NUL in a header", body: text(part("Content-Disposition: form-data; name=\"mo\0del\"") + "--b--"), error: .malformedPartHeaders("")),
        Case(
            name: "headers too large", body: text(part("Content-Disposition: form-data; name=a\r\nX: " + String(repeating: "y", count: 200)) + "--b--"),
            error: .partHeadersTooLarge(limit: 0), limits: .init(partHeaderBytes: 100)),
        Case(
            name: "endless headers", body: text("--b\r\nContent-Disposition: form-data; name=a\r\nX: " + String(repeating: "y", count: 300)),
            error: .partHeadersTooLarge(limit: 0), limits: .init(partHeaderBytes: 100)),
        Case(
            name: "a read field too long", body: text(part("Content-Disposition: form-data; name=model", String(repeating: "m", count: 1025)) + "--b--"),
            error: .fieldTooLong("model", limit: 0)),
        Case(
            name: "stream too long",
            body: text(part("Content-Disposition: form-data; name=stream", String(repeating: "\r\n-", count: 11)) + "--b--"),
            error: .fieldTooLong("stream", limit: 0), limits: .init(fieldValueBytes: 32)),
        Case(name: "model twice", body: text(model + file + model + "--b--"), error: .repeatedField("model")),
        Case(
            name: "stream twice",
            body: text(part("Content-Disposition: form-data; name=stream", "false") + part("Content-Disposition: form-data; name=stream", "true") + "--b--"),
            error: .repeatedField("stream")),
        Case(
            name: "model as a file", body: text(part("Content-Disposition: form-data; name=model; filename=m.txt") + "--b--"),
            error: .fieldIsFile("model")),
        Case(
            name: "model not UTF-8", body: text("--b\r\nContent-Disposition: form-data; name=model\r\n\r\n") + [0x6D, 0xFF, 0xFE] + text("\r\n--b--"),
            error: .invalidUTF8("model")),
        Case(
            name: "ends inside the file", body: text(model + "--b\r\nContent-Disposition: form-data; name=file; filename=a\r\n\r\nRIFF"), error: .incompleteBody
        ),
        Case(name: "ends after a delimiter", body: text(model + file + "--b"), error: .incompleteBody),
        Case(name: "ends after a delimiter line", body: text(model + file + "--b\r\n"), error: .incompleteBody),
        Case(name: "ends inside headers", body: text(model + "--b\r\nContent-Disposition: form-"), error: .incompleteBody),
        Case(name: "ends after the first dash of the closing one", body: text(model + "--b-"), error: .incompleteBody),
        Case(name: "ends in the model", body: text("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nmod"), error: .incompleteBody),
        Case(name: "ends in the preamble", body: text("preamble only\r\n"), error: .incompleteBody),
        Case(name: "empty", body: [], error: .incompleteBody),
        Case(name: "boundary followed by text", body: text(model + "--bX\r\n" + "--b--"), error: .malformedBody("")),
        Case(name: "closing boundary with one dash", body: text(model + "--b-x"), error: .malformedBody("")),
        Case(name: "padding then text", body: text("--b  x\r\n" + String(model.dropFirst(5)) + "--b--"), error: .malformedBody("")),
        Case(
            name: "CR without LF after a boundary", body: text("--b\rContent-Disposition: form-data; name=model\r\n\r\nm\r\n--b--"), error: .malformedBody("")),
        Case(
            name: "too much padding", body: text("--b" + String(repeating: " ", count: 65) + "\r\n" + String(model.dropFirst(5)) + "--b--"),
            error: .malformedBody("")),
        Case(name: "LF-only line before the first boundary", body: text("\n" + model + "--b--"), error: .malformedBody("")),
        Case(name: "boundary mid-line in the preamble", body: text("x--b\r\n" + String(model.dropFirst(5)) + "--b--"), error: .malformedBody("")),
        Case(name: "boundary after LF in the preamble", body: text("x\n" + model + "--b--"), error: .malformedBody("")),
        Case(name: "dash before the first boundary", body: text("-" + model + "--b--"), error: .malformedBody("")),
    ]

    @Test(arguments: cases)
    func sameErrorAtEveryCut(_ test: Case) {
        var driver = ScanDriver(boundary: "b")
        driver.limits = test.limits
        for cuts in MultipartFormScannerTests.cuts(of: test.body) {
            let outcome = driver.run(test.body, cuts: cuts)
            #expect(outcome.error == test.error, "\(test.name), cuts \(cuts)")
            #expect(outcome.output.count < max(1, test.body.count), "\(test.name): the whole body was written, cuts \(cuts)")
            if outcome.error != test.error { break }
        }
        #expect(driver.violations.isEmpty, "\(test.name): \(driver.violations.prefix(3))")
    }

    @Test func afterAnErrorEveryCallThrowsIt() throws {
        var scanner = MultipartFormScanner(boundary: try MultipartBoundary("b"))
        var out: [UInt8] = []
        var input = ArraySlice(Self.text(Self.model + Self.model))
        #expect(try scanner.next(&input, into: &out) == .field(name: "model", value: "m"))
        #expect(throws: MultipartFormError.repeatedField("model")) { try scanner.next(&input, into: &out) }
        var more = ArraySlice(Self.text("--b--"))
        #expect(throws: MultipartFormError.repeatedField("model")) { try scanner.next(&more, into: &out) }
        #expect(throws: MultipartFormError.repeatedField("model")) { try scanner.finish(into: &out) }
        #expect(scanner.heldCount == 0)
    }
}
