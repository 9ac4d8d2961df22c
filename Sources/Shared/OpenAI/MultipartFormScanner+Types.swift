extension MultipartFormScanner {
    /// How much a body may make the scanner hold.
    public struct Limits: Sendable, Equatable {
        /// A part's header lines, with their CRLFs.
        public var partHeaderBytes: Int
        /// The value of a field the scanner reads.
        public var fieldValueBytes: Int
        /// Blanks between a boundary and the end of its line (RFC 2046's transport padding).
        public var delimiterPaddingBytes: Int

        public init(partHeaderBytes: Int = 8192, fieldValueBytes: Int = 1024, delimiterPaddingBytes: Int = 64) {
            self.partHeaderBytes = partHeaderBytes
            self.fieldValueBytes = fieldValueBytes
            self.delimiterPaddingBytes = delimiterPaddingBytes
        }
    }

    /// A part whose content passes through (a file, or a field the scanner does not read).
    public struct Part: Sendable, Equatable {
        /// Its `name` (bytes that are not UTF-8 are replaced).
        public let name: String
        /// Its `filename`, when it has one (a file).
        public let filename: String?
        /// Its `Content-Type`, when it has one.
        public let contentType: String?

        public init(name: String, filename: String? = nil, contentType: String? = nil) {
            self.name = name
            self.filename = filename
            self.contentType = contentType
        }
    }

    /// What ``next(_:at:into:)`` stops for.
    public enum Event: Sendable, Equatable {
        /// A part the scanner does not read begins; its header lines have been written out
        /// and its content follows as it comes.
        case part(Part)
        /// A field the scanner reads is complete. Its value is not written yet:
        /// ``replaceValue(with:into:)`` now writes another instead; the next call writes it.
        case field(name: String, value: String)
        /// The closing boundary. It is not written yet: ``insertField(name:value:into:)`` now
        /// adds a field before it; the next call (or ``finish(into:)``) writes it.
        case end
    }

    /// A form field's yes or no the way the upstream (pydantic) reads it: `true`, `1`, `yes`,
    /// `on`, `t`, `y` or their `false` counterparts, in any case; nil for anything else.
    public static func boolean(_ value: String) -> Bool? {
        switch value.lowercased() {
        case "1", "on", "t", "true", "y", "yes": true
        case "0", "off", "f", "false", "n", "no": false
        default: nil
        }
    }
}
