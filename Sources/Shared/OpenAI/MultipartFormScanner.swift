/// Reads a `multipart/form-data` body as it arrives, in chunks cut anywhere, and writes it out
/// again byte for byte, except the values of the fields the gateway reads (``readFields``:
/// `model`, `stream`, `stream_include_usage`), which the caller may replace as each one
/// completes (`model`: the client's alias becomes the upstream's name). A pure state machine:
/// no I/O, memory bounded whatever the body's size.
///
/// Driving it: hand each chunk to ``next(_:at:into:)`` until it returns nil (the chunk is
/// used up), acting on each ``Event`` it returns on the way:
///
/// ```swift
/// var position = 0
/// while let event = try scanner.next(chunk, at: &position, into: &out) {
///     switch event {
///     case .field(name: "model", let alias): _ = scanner.replaceValue(with: upstreamName(alias), into: &out)
///     case .field, .part: break
///     case .end: if scanner.model == nil { _ = scanner.insertField(name: "model", value: name, into: &out) }
///     }
/// }
/// // at the end of the body:
/// try scanner.finish(into: &out)
/// ```
///
/// What it holds back, and so what ``heldCount`` counts: a partial boundary at the end of a
/// chunk (at most the boundary's length + 4), the header lines of the part being read (at most
/// ``Limits/partHeaderBytes``), the value of a field it reads (at most
/// ``Limits/fieldValueBytes``), and — until the closing boundary — the last byte it was given,
/// so a caller that forwards what it writes never completes a body the scanner has not seen
/// end well. A file's bytes are written out as they come.
///
/// It reads the body strictly, so it never sees other fields than the upstream (Starlette over
/// python-multipart, in vLLM) would: lines end with CRLF; a part's headers are RFC 9110 header
/// lines with one `Content-Disposition: form-data; name=...` (no backslash, no `name*`, no
/// parameter twice); the boundary appears only as a delimiter (after CRLF, followed by `--`,
/// or by optional blanks and CRLF); a field the gateway reads appears once, is not a file, and
/// is UTF-8. A preamble (before the first boundary) and an epilogue (after the last) pass
/// through. After an error every call throws it again.
public struct MultipartFormScanner: Sendable {
    /// The fields the gateway reads from a transcription or translation request.
    public static let gatewayFields: Set<String> = ["model", "stream", "stream_include_usage"]

    public let boundary: MultipartBoundary
    /// The fields whose values are reported (and may be replaced).
    public let readFields: Set<String>
    public let limits: Limits
    /// The values of the fields read so far, as the client sent them (not as replaced).
    public private(set) var values: [String: String] = [:]
    /// The number of parts seen so far.
    public private(set) var partCount = 0

    private let delimiter: [UInt8]  // CR LF "--" boundary
    private let dashBoundary: [UInt8]  // "--" boundary: the first delimiter, at the start of the body or of a line
    private let dashBoundaryBorders: [Int]  // the preamble's search for it (Knuth-Morris-Pratt)
    private let readFieldNames: [[UInt8]: String]
    private var state = State.preamble
    /// Bytes of the pattern being searched (`dashBoundary` in the preamble, `delimiter` in a
    /// part) matched at the end of what was given: held, and written (as the pattern's) if
    /// the match fails.
    private var matched = 0
    /// The last byte let through, held until more comes (see the type's notes).
    private var deferred: UInt8?
    /// The preamble let through so far: its length and its last two bytes.
    private var preambleLength = 0
    private var preambleEnd: (UInt8, UInt8) = (0, 0)
    /// What follows a delimiter: `-`, or blanks and CR.
    private var delimiterTail: [UInt8] = []
    private var headerBlock: [UInt8] = []
    /// How much of CR LF CR LF ends `headerBlock` (starts at 2: the delimiter line's CRLF).
    private var headerBlockEnd = 2
    private var value: [UInt8] = []

    private enum State: Sendable {
        case preamble
        case delimiterTail
        case partHeaders
        /// The content of a part: the name of the field being read, or nil when it passes through.
        case content(reading: String?)
        case fieldPaused(name: String)
        case endPaused
        case epilogue
        case failed(MultipartFormError)
    }

    /// - Parameters:
    ///   - boundary: from the request's `content-type`.
    ///   - readFields: the fields whose values ``next(_:at:into:)`` reports.
    public init(boundary: MultipartBoundary, readFields: Set<String> = gatewayFields, limits: Limits = Limits()) {
        self.boundary = boundary
        self.readFields = readFields
        self.limits = limits
        dashBoundary = Array("--".utf8) + boundary.bytes
        delimiter = [Self.cr, Self.lf] + dashBoundary
        dashBoundaryBorders = Self.borders(of: dashBoundary)
        readFieldNames = Dictionary(uniqueKeysWithValues: readFields.map { (Array($0.utf8), $0) })
    }

    /// `model`, once read.
    public var model: String? { values["model"] }

    /// True once the closing boundary has been read.
    public var hasEnded: Bool {
        switch state {
        case .endPaused, .epilogue: true
        default: false
        }
    }

    /// Bytes given and not yet written (see the type's notes for the bound).
    public var heldCount: Int {
        let deferredCount = deferred == nil ? 0 : 1
        switch state {
        case .preamble, .content(reading: nil): return matched + deferredCount
        case .content(reading: .some(_)): return value.count + matched + deferredCount
        case .delimiterTail: return heldDelimiter.count + delimiterTail.count + deferredCount
        case .partHeaders: return headerBlock.count + deferredCount
        case .fieldPaused: return value.count + delimiter.count + deferredCount
        case .endPaused: return heldDelimiter.count + 2 + deferredCount
        case .epilogue: return deferredCount
        case .failed: return 0
        }
    }

    /// Reads `input` from `position` on, writing what may go on to `output`, until an event
    /// (returned, with `position` just after what it used: call again with the same input to
    /// go on) or the end of `input` (nil, `position == input.count`).
    /// - Throws: ``MultipartFormError`` for a body that is not well-formed or not allowed.
    public mutating func next(_ input: UnsafeRawBufferPointer, at position: inout Int, into output: inout [UInt8]) throws(MultipartFormError)
        -> Event?
    {
        do {
            return try scan(input, at: &position, into: &output)
        } catch {
            state = .failed(error)
            throw error
        }
    }

    /// ``next(_:at:into:)`` over an array slice: `input` loses what was read.
    public mutating func next(_ input: inout ArraySlice<UInt8>, into output: inout [UInt8]) throws(MultipartFormError) -> Event? {
        var position = 0
        let result = input.withUnsafeBytes { raw in
            Result { () throws(MultipartFormError) in try self.next(raw, at: &position, into: &output) }
        }
        input = input.dropFirst(position)
        return try result.get()
    }

    /// Writes `replacement` instead of the value of the field just reported (`.field`).
    /// - Returns: false (and writes nothing) when the last event was not `.field`, or when
    ///   `replacement` holds the boundary's delimiter.
    public mutating func replaceValue(with replacement: String, into output: inout [UInt8]) -> Bool {
        guard case .fieldPaused = state else { return false }
        let bytes = Array(replacement.utf8)
        guard !Self.contains(delimiter, in: bytes) else { return false }
        write(bytes, into: &output)
        value = []
        state = .delimiterTail
        return true
    }

    /// Adds a field before the closing boundary just reported (`.end`), e.g. the `model` the
    /// client left out.
    /// - Returns: false (and writes nothing) when the last event was not `.end`, when `name`
    ///   is not a token (RFC 9110) or is a read field already seen, or when `value` holds the
    ///   boundary's delimiter.
    public mutating func insertField(name: String, value: String, into output: inout [UInt8]) -> Bool {
        guard case .endPaused = state else { return false }
        let nameBytes = Array(name.utf8)
        let valueBytes = Array(value.utf8)
        guard !nameBytes.isEmpty, nameBytes.allSatisfy(HeaderParameterReader.isTokenByte), values[name] == nil,
            !Self.contains(delimiter, in: valueBytes)
        else { return false }
        // The held closing delimiter becomes CRLF "--boundary--" once there is a part.
        write(heldDelimiter, into: &output)
        write(Array("\r\nContent-Disposition: form-data; name=\"".utf8) + nameBytes + Array("\"\r\n\r\n".utf8), into: &output)
        write(valueBytes, into: &output)
        partCount += 1
        if readFields.contains(name) { values[name] = value }
        return true
    }

    /// The body is over: writes what was held.
    /// - Throws: ``MultipartFormError/incompleteBody`` when the closing boundary was not read.
    public mutating func finish(into output: inout [UInt8]) throws(MultipartFormError) {
        switch state {
        case .failed(let error):
            throw error
        case .endPaused:
            writeClosingDelimiter(into: &output)
            state = .epilogue
            flushDeferred(into: &output)
        case .epilogue:
            flushDeferred(into: &output)
        default:
            state = .failed(.incompleteBody)
            throw .incompleteBody
        }
    }

    // MARK: - Reading

    private mutating func scan(_ input: UnsafeRawBufferPointer, at position: inout Int, into output: inout [UInt8]) throws(MultipartFormError)
        -> Event?
    {
        switch state {
        case .failed(let error):
            throw error
        case .fieldPaused:
            write(value, into: &output)
            value = []
            state = .delimiterTail
        case .endPaused:
            writeClosingDelimiter(into: &output)
            state = .epilogue
        default:
            break
        }
        while position < input.count {
            switch state {
            case .preamble:
                try scanPreamble(input, at: &position, into: &output)
            case .delimiterTail:
                if let event = try scanDelimiterTail(input, at: &position, into: &output) { return event }
            case .partHeaders:
                if let event = try scanPartHeaders(input, at: &position, into: &output) { return event }
            case .content(let reading):
                if let event = try scanContent(input, at: &position, into: &output, reading: reading) { return event }
            case .epilogue:
                letThrough(UnsafeRawBufferPointer(rebasing: input[position...]), into: &output)
                position = input.count
            case .fieldPaused, .endPaused, .failed:
                preconditionFailure("resumed above")
            }
        }
        return nil
    }

    /// The preamble: looks for `--boundary` at the start of the body or of a line; anywhere
    /// else it is refused (python-multipart skips line ends before it, so it must not be
    /// where the gateway would not look).
    private mutating func scanPreamble(_ input: UnsafeRawBufferPointer, at position: inout Int, into output: inout [UInt8])
        throws(MultipartFormError)
    {
        while position < input.count {
            let byte = input[position]
            position += 1
            while matched > 0 && dashBoundary[matched] != byte {
                let border = dashBoundaryBorders[matched - 1]
                letThroughPreamble(dashBoundary[0..<(matched - border)], into: &output)
                matched = border
            }
            if dashBoundary[matched] == byte {
                matched += 1
            } else {
                letThroughPreamble(CollectionOfOne(byte), into: &output)
            }
            if matched == dashBoundary.count {
                guard preambleLength == 0 || preambleEnd == (Self.cr, Self.lf) else {
                    throw .malformedBody("the boundary appears before the first part other than at the start of a line")
                }
                matched = 0
                state = .delimiterTail
                return
            }
        }
    }

    /// After a delimiter: `--` (the closing one), or optional blanks and CRLF (a part follows).
    private mutating func scanDelimiterTail(_ input: UnsafeRawBufferPointer, at position: inout Int, into output: inout [UInt8])
        throws(MultipartFormError) -> Event?
    {
        while position < input.count {
            let byte = input[position]
            position += 1
            switch (delimiterTail.last, byte) {
            case (nil, Self.dash), (nil, Self.cr), (nil, Self.space), (nil, Self.tab), (Self.space, Self.cr), (Self.tab, Self.cr):
                delimiterTail.append(byte)
            case (Self.space, Self.space), (Self.space, Self.tab), (Self.tab, Self.space), (Self.tab, Self.tab):
                delimiterTail.append(byte)
                guard delimiterTail.count <= limits.delimiterPaddingBytes else {
                    throw .malformedBody("too many blanks after a boundary")
                }
            case (Self.dash, Self.dash):
                delimiterTail = []
                state = .endPaused
                return .end
            case (Self.cr, Self.lf):
                delimiterTail.append(byte)
                letThrough(heldDelimiter + delimiterTail, into: &output)
                delimiterTail = []
                partCount += 1
                headerBlock = []
                headerBlockEnd = 2
                state = .partHeaders
                return nil
            case (Self.cr, _):
                throw .malformedBody("a boundary line does not end with CRLF")
            default:
                throw .malformedBody("a boundary is followed by other text on its line")
            }
        }
        return nil
    }

    /// A part's header lines, up to the empty line.
    private mutating func scanPartHeaders(_ input: UnsafeRawBufferPointer, at position: inout Int, into output: inout [UInt8])
        throws(MultipartFormError) -> Event?
    {
        while position < input.count {
            let byte = input[position]
            position += 1
            headerBlock.append(byte)
            guard headerBlock.count <= limits.partHeaderBytes else { throw .partHeadersTooLarge(limit: limits.partHeaderBytes) }
            switch (headerBlockEnd, byte) {
            case (0, Self.cr), (2, Self.cr), (1, Self.lf), (3, Self.lf): headerBlockEnd += 1
            case (_, Self.cr): headerBlockEnd = 1
            default: headerBlockEnd = 0
            }
            guard headerBlockEnd == 4 else { continue }
            let headers = try MultipartPartHeaders(block: headerBlock)
            letThrough(headerBlock, into: &output)
            headerBlock = []
            if let field = readFieldNames[headers.name] {
                guard headers.filename == nil else { throw .fieldIsFile(field) }
                guard values[field] == nil else { throw .repeatedField(field) }
                value = []
                state = .content(reading: field)
                return nil
            }
            state = .content(reading: nil)
            return .part(headers.part)
        }
        return nil
    }

    /// A part's content, up to the next delimiter (CR LF `--boundary`). The boundary holds no
    /// CR, so a partial match that fails lets all its bytes through and only a CR can start
    /// the next one.
    private mutating func scanContent(
        _ input: UnsafeRawBufferPointer, at position: inout Int, into output: inout [UInt8], reading field: String?
    ) throws(MultipartFormError) -> Event? {
        var found = false
        if matched > 0 {
            while matched < delimiter.count, position < input.count, input[position] == delimiter[matched] {
                matched += 1
                position += 1
            }
            if matched == delimiter.count {
                found = true
            } else if position == input.count {
                return nil
            } else {
                try content(delimiter[0..<matched], field: field, into: &output)
            }
            matched = 0
        }
        var runStart = position
        while !found, position < input.count {
            guard let cr = Self.index(of: Self.cr, in: input, from: position) else {
                position = input.count
                break
            }
            var end = cr
            var count = 0
            while count < delimiter.count, end < input.count, input[end] == delimiter[count] {
                end += 1
                count += 1
            }
            if count == delimiter.count || end == input.count {
                try content(UnsafeRawBufferPointer(rebasing: input[runStart..<cr]), field: field, into: &output)
                runStart = end
                position = end
                if count == delimiter.count { found = true } else { matched = count }
                break
            }
            position = cr + 1
        }
        if runStart < position {
            try content(UnsafeRawBufferPointer(rebasing: input[runStart..<position]), field: field, into: &output)
        }
        guard found else { return nil }
        guard let field else {
            state = .delimiterTail
            return nil
        }
        guard let text = String(validating: value, as: UTF8.self) else { throw .invalidUTF8(field) }
        values[field] = text
        state = .fieldPaused(name: field)
        return .field(name: field, value: text)
    }

    // MARK: - Writing

    /// True while a part's content passes through (tests check what is held then).
    var isPassingContentThrough: Bool {
        if case .content(reading: nil) = state { true } else { false }
    }

    /// The delimiter that was read (and is held): the first one has no CRLF of its own.
    private var heldDelimiter: [UInt8] { partCount == 0 ? dashBoundary : delimiter }

    private mutating func writeClosingDelimiter(into output: inout [UInt8]) {
        write(heldDelimiter + [Self.dash, Self.dash], into: &output)
    }

    private mutating func write(_ bytes: [UInt8], into output: inout [UInt8]) {
        flushDeferred(into: &output)
        output.append(contentsOf: bytes)
    }

    private mutating func content(_ bytes: some BidirectionalCollection<UInt8>, field: String?, into output: inout [UInt8]) throws(MultipartFormError) {
        guard let field else { return letThrough(bytes, into: &output) }
        guard value.count + bytes.count <= limits.fieldValueBytes else { throw .fieldTooLong(field, limit: limits.fieldValueBytes) }
        value.append(contentsOf: bytes)
    }

    /// Writes `bytes` but the last, which is held until more comes.
    private mutating func letThrough(_ bytes: some BidirectionalCollection<UInt8>, into output: inout [UInt8]) {
        guard let last = bytes.last else { return }
        flushDeferred(into: &output)
        output.append(contentsOf: bytes.dropLast())
        deferred = last
    }

    private mutating func letThroughPreamble(_ bytes: some BidirectionalCollection<UInt8>, into output: inout [UInt8]) {
        guard let last = bytes.last else { return }
        let beforeLast = bytes.count >= 2 ? bytes[bytes.index(bytes.endIndex, offsetBy: -2)] : preambleEnd.1
        preambleEnd = (beforeLast, last)
        preambleLength += bytes.count
        letThrough(bytes, into: &output)
    }

    private mutating func flushDeferred(into output: inout [UInt8]) {
        if let byte = deferred {
            output.append(byte)
            deferred = nil
        }
    }
}
