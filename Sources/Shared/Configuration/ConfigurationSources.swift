/// The raw inputs configuration is resolved from, highest precedence first:
/// command-line flags, the process environment, a `.env` file, the YAML config file.
public struct ConfigurationSources: Sendable {
    /// Flag values by flag name without dashes (`"workers"`, `"drain-timeout"`).
    public var flags: [String: String]
    /// The process environment.
    public var environment: [String: String]
    /// Variables read from `.env` in the working directory (same names as the environment).
    public var dotEnv: [String: String]
    /// Number of CPUs, the default worker count.
    public var cpuCount: Int
    /// Reads a file's contents; injected so tests need no files.
    public var readFile: @Sendable (String) throws -> String

    public init(
        flags: [String: String] = [:],
        environment: [String: String] = [:],
        dotEnv: [String: String] = [:],
        cpuCount: Int = 1,
        readFile: @escaping @Sendable (String) throws -> String = { try readWholeFile($0) }
    ) {
        self.flags = flags
        self.environment = environment
        self.dotEnv = dotEnv
        self.cpuCount = cpuCount
        self.readFile = readFile
    }

    /// Parses `.env` text: `KEY=VALUE` lines, `#` comments, an optional `export `,
    /// single or double quotes around the value.
    public static func parseDotEnv(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for rawLine in text.split(whereSeparator: \.isNewline) {
            var line = rawLine.trimmingSpaces()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = line.dropFirst(7).trimmingSpaces() }
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingSpaces()
            var value = line[line.index(after: eq)...].trimmingSpaces()
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = value.dropFirst().dropLast()
            }
            if !key.isEmpty { result[String(key)] = String(value) }
        }
        return result
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" || c == "\r" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s = s.dropLast() }
        return s
    }
}

/// Reads a whole file as UTF-8 text, throwing a plain error naming the failure.
public func readWholeFile(_ path: String) throws -> String {
    guard let file = fopen(path, "r") else {
        throw FileReadError(path: path, reason: String(cString: strerror(errno)))
    }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buffer, 1, buffer.count, file)
        if n > 0 { bytes.append(contentsOf: buffer[0..<n]) }
        if n < buffer.count {
            if ferror(file) != 0 { throw FileReadError(path: path, reason: "read error") }
            break
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A file that could not be read.
public struct FileReadError: Error, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "cannot read \(path): \(reason)" }
}

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif
