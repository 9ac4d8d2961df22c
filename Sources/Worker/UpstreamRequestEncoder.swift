import NIOCore
import NIOHTTP1

/// Writes the requests an ``UpstreamConnection`` sends as HTTP/1.1 bytes: head, body and
/// end leave in one buffer (the body copied behind the head up to ``copyLimit``), so a
/// request is one write to the socket.
///
/// The requests are the gateway's own, with `content-length` set by the sender, so there
/// is no framing to decide and no header to check. It sits between the socket and NIO's
/// response decoder, which still sees each request head go by and so knows what every
/// response answers.
final class UpstreamRequestEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = ByteBuffer

    /// Bodies up to this size are copied into the head's buffer.
    static let copyLimit = 16 * 1024

    private var pending: ByteBuffer?
    /// Promises of parts held in `pending`, completed with its write.
    private var waiting: [EventLoopPromise<Void>] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            var out = context.channel.allocator.buffer(capacity: 512)
            out.writeString(head.method.rawValue)
            out.writeInteger(UInt8(ascii: " "))
            out.writeString(head.uri)
            out.writeStaticString(" HTTP/1.1\r\n")
            for (name, value) in head.headers { out.writeHTTPHeader(name, value) }
            out.writeStaticString("\r\n")
            emitPending(context: context)
            pending = out
            if let promise { waiting.append(promise) }
        case .body(.byteBuffer(let body)):
            if var out = pending, body.readableBytes <= Self.copyLimit {
                pending = nil  // uniquely referenced while appending
                out.writeImmutableBuffer(body)
                pending = out
                if let promise { waiting.append(promise) }
            } else {
                emitPending(context: context)
                context.write(wrapOutboundOut(body), promise: promise)
            }
        case .body(.fileRegion(let region)):
            emitPending(context: context)
            context.write(NIOAny(IOData.fileRegion(region)), promise: promise)
        case .end:
            if let promise { waiting.append(promise) }
            if pending == nil, !waiting.isEmpty { pending = context.channel.allocator.buffer(capacity: 0) }
            emitPending(context: context)
        }
    }

    private func emitPending(context: ChannelHandlerContext) {
        guard let out = pending else { return }
        pending = nil
        let promises = waiting
        waiting.removeAll(keepingCapacity: true)
        if promises.isEmpty {
            context.write(wrapOutboundOut(out), promise: nil)
        } else {
            let written = context.eventLoop.makePromise(of: Void.self)
            for promise in promises { written.futureResult.cascade(to: promise) }
            context.write(wrapOutboundOut(out), promise: written)
        }
    }
}
