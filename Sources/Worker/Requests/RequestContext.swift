/// What the gateway gathers about one request while answering it, apart from the bytes it
/// writes: the request's id, what its access-log line will say, the headers every response
/// to it carries, and whether it counts as an open API request. Kept by the request's
/// ``ResponseWriter`` (one object per request: no allocation of its own), filled by the
/// handlers, read by the writer for the head and by the access log at the end.
struct RequestContext {
    /// The `x-request-id` of the request (the client's, if it sent a usable one).
    let requestID: String
    /// Extra fields for the access log line (key, model, upstream, tokens, error).
    var logFields = AccessFields()
    /// Headers every response to this request carries (`x-ratelimit-*`).
    var extraHeaders: [(String, String)] = []
    /// The request counts as an open API request until its response ends (`/idle`).
    var countedAsOpen = false

    init(requestID: String) { self.requestID = requestID }
}
