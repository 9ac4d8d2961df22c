/// The parts of an upstream root URL the gateway needs: `http(s)://HOST[:PORT][/prefix]`.
public struct UpstreamURL: Sendable, Equatable {
    /// `http` or `https`.
    public var scheme: String
    /// Host name or IP literal (IPv6 without brackets).
    public var host: String
    /// Explicit port, or the scheme's default.
    public var port: Int
    /// Path prefix before `/v1`, without a trailing slash ("" for none).
    public var pathPrefix: String

    /// Parses an upstream root URL; nil when it is not `http(s)://HOST[:PORT][/path]`.
    public init?(parsing text: String) {
        let lower = text.lowercased()
        let rest: Substring
        if lower.hasPrefix("http://") {
            scheme = "http"
            rest = text.dropFirst(7)
        } else if lower.hasPrefix("https://") {
            scheme = "https"
            rest = text.dropFirst(8)
        } else {
            return nil
        }
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        let path = rest[authority.endIndex...]
        if path.contains("?") || path.contains("#") || authority.contains("@") { return nil }
        pathPrefix = String(path)
        while pathPrefix.hasSuffix("/") { pathPrefix.removeLast() }

        var hostPart: Substring
        var portPart: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portPart = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        } else {
            hostPart = authority
        }
        guard !hostPart.isEmpty else { return nil }
        host = hostPart.lowercased()
        if let portPart {
            guard let p = Int(portPart), (1...65535).contains(p) else { return nil }
            port = p
        } else {
            port = scheme == "https" ? 443 : 80
        }
    }
}
