/// Something that writes a response over time on a ``ResponseWriter`` (a proxied exchange).
protocol ResponseProducer: AnyObject {
    /// The client hung up before the response was complete: stop (cancel the upstream).
    func clientGone()
    /// The worker's drain timeout came first: end the response as the client can read it
    /// (a stream with an error event and `[DONE]`), or not at all (the connection closes).
    func drainDeadlineReached()
}
