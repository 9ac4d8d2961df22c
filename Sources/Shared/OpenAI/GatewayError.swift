/// Every error a client can see: an HTTP status plus OpenAI's error object
/// `{"error":{"message","type","param","code"}}` (all four keys; `param`/`code` may be null).
public struct GatewayError: Error, Sendable, Equatable, CustomStringConvertible {
    private enum Kind: Sendable, Equatable {
        case badRequest
        case unauthorized
        case forbidden
        case notFound
        case methodNotAllowed
        case payloadTooLarge
        case headersTooLarge
        case rateLimited
        case badGateway
        case unavailable
        /// 503 for the gateway's own reason (not an upstream's).
        case serviceUnavailable
        case gatewayTimeout
        case internalError
        case httpVersionNotSupported
    }

    private let kind: Kind
    /// Human-readable explanation (never contains a secret).
    public let message: String
    /// The request field at fault, if any.
    public let param: String?
    /// Machine-readable code, if any.
    public let code: String?
    /// Extra response headers (`Allow`, `Retry-After`, ...).
    public let headers: [(String, String)]

    private init(_ kind: Kind, _ message: String, param: String? = nil, code: String? = nil, headers: [(String, String)] = []) {
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers
    }

    public static func == (lhs: GatewayError, rhs: GatewayError) -> Bool {
        lhs.kind == rhs.kind && lhs.message == rhs.message && lhs.param == rhs.param && lhs.code == rhs.code
    }

    /// 400: the request cannot be understood.
    public static func badRequest(_ message: String, param: String? = nil, code: String? = nil) -> GatewayError {
        GatewayError(.badRequest, message, param: param, code: code)
    }
    /// 401: missing or wrong key.
    public static func unauthorized(_ message: String = "Missing or invalid API key. Send it as 'Authorization: Bearer <key>'.") -> GatewayError {
        GatewayError(.unauthorized, message, code: "invalid_api_key", headers: [("www-authenticate", "Bearer")])
    }
    /// 403: the key may not use this model.
    public static func forbidden(model: String) -> GatewayError {
        GatewayError(.forbidden, "This API key may not use the model '\(model)'.", param: "model", code: "model_not_allowed")
    }
    /// 404: unknown model.
    public static func modelNotFound(_ model: String) -> GatewayError {
        GatewayError(.notFound, "The model '\(model)' does not exist.", param: "model", code: "model_not_found")
    }
    /// 404: a stored response this key cannot reach, or no upstream holds (vLLM's words).
    public static func responseNotFound(_ id: String) -> GatewayError {
        GatewayError(.notFound, "Response with id '\(id)' not found.", param: "response_id", code: "response_not_found")
    }
    /// 404: unknown route.
    public static func routeNotFound(method: String, path: String) -> GatewayError {
        GatewayError(.notFound, "Unknown route: \(method) \(path)", code: "unknown_url")
    }
    /// 405 with `Allow`.
    public static func methodNotAllowed(_ method: String, allowed: [String]) -> GatewayError {
        GatewayError(
            .methodNotAllowed, "Method \(method) is not allowed here; use \(allowed.joined(separator: ", ")).",
            code: "method_not_allowed", headers: [("allow", allowed.joined(separator: ", "))])
    }
    /// 413.
    public static func payloadTooLarge(limit: Int) -> GatewayError {
        GatewayError(.payloadTooLarge, "Request body is larger than the limit of \(limit) bytes.", code: "request_too_large")
    }
    /// 431: the request line and header fields (or a chunked body's trailers) are too large.
    public static func headersTooLarge() -> GatewayError {
        GatewayError(.headersTooLarge, "Request line or headers too large.", code: "headers_too_large")
    }
    /// 429 with `Retry-After` and whatever `x-ratelimit-*` headers the caller adds.
    public static func rateLimited(_ message: String, retryAfterSeconds: Int, headers: [(String, String)] = []) -> GatewayError {
        GatewayError(.rateLimited, message, code: "rate_limit_exceeded", headers: [("retry-after", String(max(1, retryAfterSeconds)))] + headers)
    }
    /// 502: the upstream failed.
    public static func badGateway(_ message: String) -> GatewayError {
        GatewayError(.badGateway, message, code: "upstream_error")
    }
    /// 503 with `Retry-After`: breaker open, upstream down, or draining.
    public static func unavailable(_ message: String, retryAfterSeconds: Int, code: String = "upstream_unavailable") -> GatewayError {
        GatewayError(.unavailable, message, code: code, headers: [("retry-after", String(max(1, retryAfterSeconds)))])
    }
    /// 503 with `Retry-After` for the gateway's own reason, not an upstream's: the limits
    /// store cannot be used and `REDIS_FAILURE_MODE=closed` refuses rather than guess.
    public static func limitsUnavailable(retryAfterSeconds: Int) -> GatewayError {
        GatewayError(
            .serviceUnavailable, "Rate limits cannot be checked right now (REDIS_FAILURE_MODE=closed); try again shortly.",
            code: "limits_unavailable", headers: [("retry-after", String(max(1, retryAfterSeconds)))])
    }
    /// 504: the upstream did not answer in time.
    public static func gatewayTimeout(_ message: String) -> GatewayError {
        GatewayError(.gatewayTimeout, message, code: "upstream_timeout")
    }
    /// 500: a bug in the gateway (the message is generic; details go to the log).
    public static func internalError() -> GatewayError {
        GatewayError(.internalError, "The gateway failed to handle this request.", code: "internal_error")
    }

    /// 505: an HTTP version other than 1.0 and 1.1.
    public static func httpVersionNotSupported() -> GatewayError {
        GatewayError(.httpVersionNotSupported, "HTTP version not supported; use HTTP/1.1.", code: "http_version_not_supported")
    }

    /// The HTTP status code.
    public var status: Int {
        switch kind {
        case .badRequest: 400
        case .unauthorized: 401
        case .forbidden: 403
        case .notFound: 404
        case .methodNotAllowed: 405
        case .payloadTooLarge: 413
        case .headersTooLarge: 431
        case .rateLimited: 429
        case .badGateway: 502
        case .unavailable, .serviceUnavailable: 503
        case .gatewayTimeout: 504
        case .internalError: 500
        case .httpVersionNotSupported: 505
        }
    }

    /// OpenAI's `type` for this error.
    public var type: String {
        switch kind {
        case .badRequest, .notFound, .methodNotAllowed, .payloadTooLarge, .headersTooLarge, .httpVersionNotSupported: "invalid_request_error"
        case .unauthorized: "authentication_error"
        case .forbidden: "permission_error"
        case .rateLimited: "rate_limit_error"
        case .badGateway, .unavailable, .gatewayTimeout: "upstream_error"
        case .internalError, .serviceUnavailable: "server_error"
        }
    }

    /// The JSON body: `{"error":{"message":...,"type":...,"param":...,"code":...}}`.
    public var jsonBody: String {
        var out = "{\"error\":{\"message\":"
        JSON.appendQuoted(message, to: &out)
        out += ",\"type\":"
        JSON.appendQuoted(type, to: &out)
        out += ",\"param\":"
        if let param { JSON.appendQuoted(param, to: &out) } else { out += "null" }
        out += ",\"code\":"
        if let code { JSON.appendQuoted(code, to: &out) } else { out += "null" }
        out += "}}"
        return out
    }

    /// Anthropic's type for this error (`invalid_request_error`, `authentication_error`,
    /// `permission_error`, `not_found_error`, `request_too_large`, `rate_limit_error`,
    /// `api_error`, `overloaded_error`), as its status maps.
    public var anthropicType: String {
        switch kind {
        case .badRequest, .methodNotAllowed, .headersTooLarge, .httpVersionNotSupported: "invalid_request_error"
        case .unauthorized: "authentication_error"
        case .forbidden: "permission_error"
        case .notFound: "not_found_error"
        case .payloadTooLarge: "request_too_large"
        case .rateLimited: "rate_limit_error"
        case .unavailable, .serviceUnavailable: "overloaded_error"
        case .badGateway, .gatewayTimeout, .internalError: "api_error"
        }
    }

    /// The JSON body in Anthropic's shape: `{"type":"error","error":{"type":...,"message":...}}`.
    public var anthropicBody: String {
        var out = "{\"type\":\"error\",\"error\":{\"type\":"
        JSON.appendQuoted(anthropicType, to: &out)
        out += ",\"message\":"
        JSON.appendQuoted(message, to: &out)
        out += "}}"
        return out
    }

    public var description: String { "\(status) \(type): \(message)" }
}
