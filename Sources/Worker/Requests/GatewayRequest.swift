import NIOCore
import NIOHTTP1
import Shared

/// A request whose body has been read (within the size limit).
struct GatewayRequest {
    let head: RequestHead
    /// The matched route template.
    let route: Route
    let body: ByteBuffer
    let requestID: String
}
