/// Why a `multipart/form-data` request was refused: by its `content-type` (``MultipartBoundary``)
/// or by its body (``MultipartFormScanner``). Every case is the client's fault and becomes a 400
/// through ``gatewayError``; ``message`` is written for the client.
public struct MultipartFormError: Error, Sendable, Equatable, CustomStringConvertible {
    private enum Kind: Sendable, Equatable {
        case notMultipart
        case missingBoundary
        case invalidBoundary
        case unsupportedCharset
        case malformedBody
        case malformedPartHeaders
        case partHeadersTooLarge
        case fieldTooLong(String)
        case repeatedField(String)
        case fieldIsFile(String)
        case invalidUTF8(String)
        case incompleteBody
    }

    private let kind: Kind
    /// What is wrong, for the client (never echoes the body's bytes).
    public let message: String

    private init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// The `content-type` is not `multipart/form-data`.
    public static let notMultipart = MultipartFormError(.notMultipart, "The request must be multipart/form-data.")
    /// `multipart/form-data` without a `boundary` parameter (vLLM's words).
    public static let missingBoundary = MultipartFormError(.missingBoundary, "Missing boundary in multipart.")
    /// A `boundary` that is not 1 to 70 of RFC 2046's characters, or given twice.
    public static let invalidBoundary = MultipartFormError(
        .invalidBoundary, "Invalid multipart boundary: it must be 1 to 70 letters, digits or '()+_,-./:=? characters, given once.")
    /// A `charset` other than UTF-8 or ASCII (the upstream would read the field names with it).
    public static let unsupportedCharset = MultipartFormError(.unsupportedCharset, "Only the utf-8 charset is supported for multipart/form-data.")
    /// A delimiter line that is not one, or the boundary where it may not be.
    public static func malformedBody(_ reason: String) -> MultipartFormError {
        MultipartFormError(.malformedBody, "Invalid multipart body: \(reason).")
    }
    /// A part's header lines cannot be read as `multipart/form-data` part headers.
    public static func malformedPartHeaders(_ reason: String) -> MultipartFormError {
        MultipartFormError(.malformedPartHeaders, "Invalid multipart part headers: \(reason).")
    }
    /// A part's header lines are longer than the limit.
    public static func partHeadersTooLarge(limit: Int) -> MultipartFormError {
        MultipartFormError(.partHeadersTooLarge, "A multipart part's headers are longer than \(limit) bytes.")
    }
    /// A field the gateway reads (`model`, `stream`, ...) is longer than the limit.
    public static func fieldTooLong(_ name: String, limit: Int) -> MultipartFormError {
        MultipartFormError(.fieldTooLong(name), "The form field '\(name)' is longer than \(limit) bytes.")
    }
    /// A field the gateway reads appears twice (the upstream would take the last one).
    public static func repeatedField(_ name: String) -> MultipartFormError {
        MultipartFormError(.repeatedField(name), "The form field '\(name)' must be given once.")
    }
    /// A field the gateway reads is sent as a file (with a `filename`).
    public static func fieldIsFile(_ name: String) -> MultipartFormError {
        MultipartFormError(.fieldIsFile(name), "The form field '\(name)' must be a plain field, not a file.")
    }
    /// A field the gateway reads is not valid UTF-8.
    public static func invalidUTF8(_ name: String) -> MultipartFormError {
        MultipartFormError(.invalidUTF8(name), "The form field '\(name)' must be valid UTF-8.")
    }
    /// The body ended before its closing boundary.
    public static let incompleteBody = MultipartFormError(.incompleteBody, "The multipart body ended before its closing boundary.")

    public static func == (lhs: MultipartFormError, rhs: MultipartFormError) -> Bool { lhs.kind == rhs.kind }

    /// The form field at fault, if any.
    public var param: String? {
        switch kind {
        case .fieldTooLong(let name), .repeatedField(let name), .fieldIsFile(let name), .invalidUTF8(let name): name
        default: nil
        }
    }

    /// A machine-readable code for OpenAI's error object.
    public var code: String {
        switch kind {
        case .notMultipart: "invalid_content_type"
        case .missingBoundary, .invalidBoundary, .unsupportedCharset: "invalid_content_type"
        case .malformedBody, .malformedPartHeaders, .incompleteBody: "invalid_multipart"
        case .partHeadersTooLarge, .fieldTooLong: "multipart_part_too_large"
        case .repeatedField: "duplicate_field"
        case .fieldIsFile, .invalidUTF8: "invalid_value"
        }
    }

    /// The 400 a client gets.
    public var gatewayError: GatewayError { .badRequest(message, param: param, code: code) }

    public var description: String { message }
}
