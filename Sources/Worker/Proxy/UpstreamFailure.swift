/// How an upstream exchange failed.
enum UpstreamFailure: Error, Equatable {
    /// Could not connect (refused, unreachable, connect timeout): the upstream is down.
    case unreachable(String)
    /// No response head (or, mid-response, no byte) within the upstream's timeout.
    case timeout
    /// The connection broke (reset, closed, protocol error).
    case failed(String)
    /// A kept-alive connection closed before answering: the upstream had timed it out just
    /// as it was reused. Nothing reached the upstream's application; a fresh connection
    /// may send the request again.
    case staleConnection
    /// The gateway itself ran out of something a connection needs (file descriptors,
    /// socket buffers, local ports): not the upstream's fault, and never counted against it.
    case localResources(String)
}
