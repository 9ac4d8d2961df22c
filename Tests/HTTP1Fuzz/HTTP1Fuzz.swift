import HTTP1
import NIOCore
import NIOHTTP1

#if LIBFUZZER
    import CLibFuzzer
    import Glibc
#else
    import Foundation
#endif

// A coverage-guided fuzz target for ``HTTP1Parser`` (scripts/fuzz-http1 builds it with
// `-sanitize=fuzzer,address -D LIBFUZZER`). Each input goes to the request parser and to
// the response parser, whole, byte by byte, in pieces of 7 and cut at a point the input
// picks, with the usual head limit and a tiny one, and must give the same parts every
// way, in a legal order, with bodies as long as their framing says. Any broken invariant
// traps, and libFuzzer keeps the input.
//
// Built without LIBFUZZER (a plain `swift build`), the binary runs the same checks over the
// files and directories it is given, a corpus or a crash artifact.

/// libFuzzer's entry: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    check(bytes, as: RequestHead<FuzzRoute>.self)
    check(bytes, as: UpstreamResponseHead.self)
    return 0
}

/// The route of the fuzzed requests: the path, kept to check it is the head's target.
struct FuzzRoute: RequestRoute, Equatable {
    let path: String
    init(path: String) { self.path = path }
}

/// A head that remembers the framing its inner head chose, for the checks.
struct Framed<Inner: HTTP1Head>: HTTP1Head {
    var inner: Inner
    var chosen = HTTP1Framing.none

    init(startLine: UnsafeRawBufferPointer) throws(HTTP1ParseError) {
        inner = try Inner(startLine: startLine)
    }

    mutating func add(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        inner.add(name: name, value: value)
    }

    mutating func framing(contentLength: Int?, transferEncoding: UnsafeRawBufferPointer?) throws(HTTP1ParseError) -> HTTP1Framing {
        chosen = try inner.framing(contentLength: contentLength, transferEncoding: transferEncoding)
        return chosen
    }
}

/// What one parse read: its parts (adjacent body bytes joined), and the error it ended with.
struct Transcript<Head: HTTP1Head>: Equatable {
    enum Event: Equatable {
        case head(Framed<Head>)
        case body([UInt8])
        case end
    }

    var events: [Event] = []
    var error: HTTP1ParseError?
}

/// Every way of feeding `bytes` reads the same parts, and each way obeys the invariants.
func check<Head: HTTP1Head>(_ bytes: [UInt8], as: Head.Type) {
    let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % bytes.count
    for maxHeadBytes in [80 * 1024, 48] {
        let whole = parse(bytes, pieces: [bytes.count], maxHeadBytes: maxHeadBytes, as: Head.self)
        var ways = [[7], [cut, bytes.count]]
        if bytes.count <= 256 { ways.append([1]) }  // byte by byte costs a buffer per byte
        for pieces in ways {
            let other = parse(bytes, pieces: pieces, maxHeadBytes: maxHeadBytes, as: Head.self)
            precondition(other == whole, "fed in pieces of \(pieces) the parts differ:\n\(other)\nwhole:\n\(whole)")
        }
    }
}

/// `bytes` fed in pieces of the sizes given (the last size repeating), then the close;
/// traps where the parser breaks an invariant.
func parse<Head: HTTP1Head>(_ bytes: [UInt8], pieces: [Int], maxHeadBytes: Int, as: Head.Type) -> Transcript<Head> {
    var parser = HTTP1Parser<Framed<Head>>(maxHeadBytes: maxHeadBytes)
    var transcript = Transcript<Head>()
    var message = MessageCheck()
    var offset = 0
    var parts = 0
    var piece = 0
    while offset < bytes.count {
        let size = max(1, pieces[min(piece, pieces.count - 1)])
        piece += 1
        let end = min(bytes.count, offset + size)
        parser.feed(ByteBuffer(bytes: bytes[offset..<end]))
        offset = end
        do throws(HTTP1ParseError) {
            while let part = try parser.next() {
                // Each part but an end takes at least one byte, and an end follows one that did.
                parts += 1
                precondition(parts <= 2 * offset + 2, "\(parts) parts from \(offset) bytes: the parser loops")
                message.take(part, into: &transcript)
            }
        } catch {
            transcript.error = error
            // After an error every call fails the same way, whatever comes next.
            parser.feed(ByteBuffer(bytes: bytes[..<min(bytes.count, 16)]))
            do throws(HTTP1ParseError) {
                let part = try parser.next()
                preconditionFailure("after \(error) the parser read \(String(describing: part))")
            } catch {
                precondition(error == transcript.error, "after \(transcript.error!) it threw \(error)")
            }
            return transcript
        }
        precondition(!parser.isIdle || message.framing == nil, "idle inside a message framed \(String(describing: message.framing))")
    }
    let end = parser.finish()
    if case .untilClose = message.framing {
        precondition(end != nil, "the close did not end a message framed by it")
    } else {
        precondition(end == nil, "the close ended a message framed \(String(describing: message.framing))")
    }
    if let end { message.take(end, into: &transcript) }
    return transcript
}

/// The order of parts: head, body*, end, again and again; bodies only where the framing
/// has one, and exactly as long as a length says.
struct MessageCheck {
    /// The framing of the message under way; nil between messages.
    var framing: HTTP1Framing?
    var bodyBytes = 0

    mutating func take<Head: HTTP1Head>(_ part: HTTPPart<Framed<Head>, ByteBuffer>, into transcript: inout Transcript<Head>) {
        switch part {
        case .head(let head):
            precondition(framing == nil, "a head inside a message")
            checkHead(head)
            framing = head.chosen
            bodyBytes = 0
            transcript.events.append(.head(head))
        case .body(let buffer):
            guard let framing else { preconditionFailure("a body part between messages") }
            precondition(buffer.readableBytes > 0, "an empty body part")
            bodyBytes += buffer.readableBytes
            switch framing {
            case .none: preconditionFailure("a body part in a message without a body")
            case .length(let length): precondition(bodyBytes <= length, "\(bodyBytes) body bytes of \(length)")
            case .chunked, .untilClose: break
            }
            if case .body(let sofar) = transcript.events.last {
                transcript.events[transcript.events.count - 1] = .body(sofar + Array(buffer.readableBytesView))
            } else {
                transcript.events.append(.body(Array(buffer.readableBytesView)))
            }
        case .end(let trailers):
            guard let framing else { preconditionFailure("an end between messages") }
            precondition(trailers == nil, "trailers are dropped")
            if case .length(let length) = framing { precondition(bodyBytes == length, "ended after \(bodyBytes) body bytes of \(length)") }
            self.framing = nil
            transcript.events.append(.end)
        }
    }

    /// What the gateway's heads say agrees with the framing the parser went by.
    private func checkHead<Head>(_ head: Framed<Head>) {
        if let request = head.inner as? RequestHead<FuzzRoute> {
            precondition(request.route.path == request.uri, "route of \(request.uri) is \(request.route.path)")
            precondition(request.version == .http1_0 || request.version == .http1_1)
            precondition(request.hasBody == (head.chosen != .none), "hasBody \(request.hasBody), framing \(head.chosen)")
            precondition(request.isChunked == (head.chosen == .chunked))
            precondition(request.version == .http1_1 || !request.isChunked, "an HTTP/1.0 request read as chunked")
            if case .length(let length) = head.chosen { precondition(request.contentLength == length) }
        } else if let response = head.inner as? UpstreamResponseHead {
            precondition((100...999).contains(response.status), "status \(response.status)")
            let bodiless = response.status < 200 || response.status == 204 || response.status == 304
            precondition(!bodiless || head.chosen == .none, "status \(response.status) with framing \(head.chosen)")
            if case .length(let length) = head.chosen { precondition(response.contentLength == length) }
        }
    }
}

#if LIBFUZZER
    /// libFuzzer's driver with this process's arguments. SwiftPM links every executable to the
    /// main it compiles, which would hide libFuzzer's own: this main hands over to it.
    @main
    enum Fuzz {
        static func main() {
            var argc = CommandLine.argc
            var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
            exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in data.map { fuzz($0, size) } ?? 0 })
        }
    }
#else
    /// Without libFuzzer: the checks over every file named, or in a directory named.
    @main
    enum Replay {
        static func main() throws {
            var count = 0
            for argument in CommandLine.arguments.dropFirst() {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory) else {
                    throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: argument])
                }
                let paths =
                    isDirectory.boolValue
                    ? try FileManager.default.contentsOfDirectory(atPath: argument).sorted().map { argument + "/" + $0 } : [argument]
                for path in paths {
                    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
                    _ = bytes.withUnsafeBufferPointer { fuzz($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
                    count += 1
                }
            }
            print("HTTP1Fuzz: \(count) inputs checked")
        }
    }
#endif
