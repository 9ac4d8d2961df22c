/// Where Redis is and how to log in: `redis://[user:password@]host[:port][/db]`, or
/// `rediss://` for TLS. Port 6379 and database 0 by default; user and password are
/// percent-decoded. Its ``description`` (and what `dump` or a debugger shows) never
/// contains the password; its encoded form (`Codable`, how the supervisor hands the
/// configuration to its workers) does.
public struct RedisURL: Sendable, Hashable, Codable {
    /// Longest URL accepted.
    static let maxLength = 4096

    /// `rediss://`: TLS, the server's certificate checked against ``host``.
    public var tls: Bool
    /// Host name or IP literal (IPv6 without brackets).
    public var host: String
    /// TCP port (6379 when the URL names none).
    public var port: Int
    /// The ACL user for `AUTH user password`; nil for `AUTH password` (or no `AUTH`).
    public var user: String?
    /// Sent with `AUTH` on connect; nil for none.
    public var password: String?
    /// Chosen with `SELECT` on connect when not 0.
    public var database: Int

    /// A URL from its parts (the tests' and a configuration file's way).
    public init(tls: Bool = false, host: String, port: Int = 6379, user: String? = nil, password: String? = nil, database: Int = 0) {
        self.tls = tls
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]` (`rediss://` for TLS).
    public init(parsing text: String) throws(RedisURLError) {
        guard text.utf8.count <= Self.maxLength else { throw RedisURLError(reason: "longer than \(Self.maxLength) bytes") }
        guard !text.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F }) else {
            throw RedisURLError(reason: "contains a space or a control character")
        }
        let rest: Substring
        if text.lowercased().hasPrefix("redis://") {
            tls = false
            rest = text.dropFirst("redis://".count)
        } else if text.lowercased().hasPrefix("rediss://") {
            tls = true
            rest = text.dropFirst("rediss://".count)
        } else {
            throw RedisURLError(reason: "must start with redis:// or rediss://")
        }

        // The last `@` ends the user information, so a password may hold `@`, `/`, `?` or `#`.
        var location = rest
        user = nil
        password = nil
        if let at = rest.lastIndex(of: "@") {
            let (name, secret) = try Self.credentials(rest[..<at])
            user = name
            password = secret
            location = rest[rest.index(after: at)...]
        }

        let authority = location.prefix { $0 != "/" }
        let path = location[authority.endIndex...]
        (host, port) = try Self.hostAndPort(authority)
        database = try Self.database(path)
    }

    private static func credentials(_ userInfo: Substring) throws(RedisURLError) -> (String?, String) {
        guard let colon = userInfo.firstIndex(of: ":") else {
            throw RedisURLError(reason: "user information must be user:password or :password")
        }
        let user = try percentDecoded(userInfo[..<colon], what: "user")
        let password = try percentDecoded(userInfo[userInfo.index(after: colon)...], what: "password")
        guard !password.isEmpty else { throw RedisURLError(reason: "the password is empty") }
        return (user.isEmpty ? nil : user, password)
    }

    private static func hostAndPort(_ authority: Substring) throws(RedisURLError) -> (String, Int) {
        let host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw RedisURLError(reason: "IPv6 host without its closing ]") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            guard !host.isEmpty, host.allSatisfy({ ($0.isASCII && $0.isHexDigit) || $0 == ":" || $0 == "." }) else {
                throw RedisURLError(reason: "the IPv6 host is not an IPv6 address")
            }
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw RedisURLError(reason: "unexpected text after the IPv6 host") }
                portText = after.dropFirst()
            }
        } else {
            if let colon = authority.firstIndex(of: ":") {
                host = authority[..<colon]
                portText = authority[authority.index(after: colon)...]
            } else {
                host = authority
            }
            guard !host.isEmpty else { throw RedisURLError(reason: "no host") }
            guard host.utf8.count <= 253, host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_") })
            else {
                throw RedisURLError(reason: "the host is not a host name or an IP address")
            }
        }
        guard let portText else { return (host.lowercased(), 6379) }
        guard portText.count <= 5, portText.allSatisfy(\.isASCIIDigit), let port = Int(portText), (1...65535).contains(port) else {
            throw RedisURLError(reason: "the port must be a number from 1 to 65535")
        }
        return (host.lowercased(), port)
    }

    private static func database(_ path: Substring) throws(RedisURLError) -> Int {
        let number = path.dropFirst()  // the `/`
        if number.isEmpty { return 0 }
        guard number.count <= 9, number.allSatisfy(\.isASCIIDigit), let database = Int(number) else {
            throw RedisURLError(reason: "the path must be a database number (/0 to /999999999)")
        }
        return database
    }

    /// `%XX` sequences as bytes, the whole as UTF-8.
    private static func percentDecoded(_ text: Substring, what: String) throws(RedisURLError) -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var utf8 = text.utf8[...]
        while let byte = utf8.popFirst() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard utf8.count >= 2, let high = hexValue(utf8.popFirst()!), let low = hexValue(utf8.popFirst()!) else {
                throw RedisURLError(reason: "the \(what) has a % not followed by two hex digits")
            }
            bytes.append(high << 4 | low)
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw RedisURLError(reason: "the \(what) is not UTF-8 once percent-decoded")
        }
        return decoded
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension RedisURL: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The URL with its password as `***`.
    public var description: String {
        var text = tls ? "rediss://" : "redis://"
        if password != nil { text += "\(user ?? ""):***@" }
        text += host.contains(":") ? "[\(host)]" : host
        text += ":\(port)/\(database)"
        return text
    }

    /// The same redacted text.
    public var debugDescription: String { description }

    /// What `dump` and debuggers show: the redacted text, never the fields.
    public var customMirror: Mirror { Mirror(self, children: ["url": description]) }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
