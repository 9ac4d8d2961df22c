/// What the gateway asks an upstream: a `POST` of a JSON body (or of an upload, chunked), or
/// a `GET`, over HTTP/1.1, so the head is written straight from these fields (no
/// `HTTPHeaders` per request). Every value
/// is the gateway's own (configuration, route templates, a checked request id), so none
/// holds CR or LF.
struct UpstreamRequest {
    /// `POST`, or `GET` (a stored response).
    var method: String = "POST"
    /// The upstream URL's path (`""` or `/something`, no trailing slash).
    var pathPrefix: String
    /// The route's path (`/v1/chat/completions`), or the client's (`/v1/responses/resp_1`).
    var route: String
    /// `Host` header value.
    var host: String
    /// `accept: text/event-stream` (a streamed request) rather than `application/json`.
    var acceptsEventStream: Bool
    var requestID: String
    /// The client's `anthropic-version` (Anthropic's Messages API), passed on.
    var anthropicVersion: String? = nil
    /// A cloud fallback's `Authorization` (never logged).
    var authorization: String?
    /// An upload's `content-type` (its multipart boundary, checked): the body follows the
    /// head in chunks (`transfer-encoding: chunked`) as it is read. Nil: a JSON body whose
    /// length is known.
    var uploadContentType: String? = nil
}
