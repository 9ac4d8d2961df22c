import HTTP1
import NIOCore

/// What receives one upstream response. Every call comes on the worker's event loop, in
/// order: `head`, `body`…, then exactly one of `end` or `failed`.
protocol UpstreamResponseHandling: AnyObject {
    func upstreamHead(_ head: UpstreamResponseHead)
    func upstreamBody(_ buffer: ByteBuffer)
    /// A burst of reads is over: what was written to the client can be flushed now.
    func upstreamReadComplete()
    func upstreamEnd()
    func upstreamFailed(_ failure: UpstreamFailure)
    /// The upstream's socket takes more again (an upload waits for it).
    func upstreamWritable()
}

extension UpstreamResponseHandling {
    func upstreamWritable() {}
}
