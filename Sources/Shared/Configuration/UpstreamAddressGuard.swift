#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// Refuses upstream hosts that reach cloud metadata services, so a configuration mistake
/// (or a hostile one) cannot turn the gateway into a relay to instance credentials.
///
/// Checked forms: the listed names, IPv4 in every spelling `inet_aton` accepts (dotted,
/// decimal `2852039166`, hex `0xa9fea9fe`, octal, short forms), IPv6 and IPv4-mapped IPv6,
/// and every address a host name resolves to at load time.
public enum UpstreamAddressGuard {
    static let blockedNames: Set<String> = ["metadata.google.internal", "metadata.goog", "metadata"]
    static let blockedIPv4: Set<UInt32> = [
        0xA9FE_A9FE,  // 169.254.169.254 (AWS, GCP, Azure, OpenStack)
        0xA9FE_AA02,  // 169.254.170.2 (AWS ECS task metadata)
        0x6464_64C8,  // 100.100.100.200 (Alibaba Cloud)
    ]
    static let blockedIPv6: Set<[UInt8]> = [
        [0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54]  // fd00:ec2::254
    ]

    /// Why `host` is refused, or nil when it may be used.
    /// - Parameter resolve: resolve host names and check every address (load time only).
    public static func refusal(forHost rawHost: String, resolve: Bool = true) -> String? {
        var host = rawHost.lowercased()
        while host.hasSuffix(".") { host.removeLast() }
        let message = "points at a cloud metadata service (\(rawHost)); refused"
        if blockedNames.contains(host) { return message }
        if let v4 = ipv4(host) { return isBlocked(v4: v4) ? message : nil }
        if let v6 = ipv6(host) { return isBlocked(v6: v6) ? message : nil }
        guard resolve else { return nil }
        for address in resolveAll(host) {
            let blocked: Bool
            switch address {
            case .v4(let v4): blocked = isBlocked(v4: v4)
            case .v6(let v6): blocked = isBlocked(v6: v6)
            }
            if blocked { return "resolves to a cloud metadata service address (\(rawHost)); refused" }
        }
        return nil
    }

    /// The listed addresses, and the whole link-local range (169.254.0.0/16), where cloud
    /// metadata services live and no inference server does.
    static func isBlocked(v4: UInt32) -> Bool { blockedIPv4.contains(v4) || v4 >> 16 == 0xA9FE }

    static func isBlocked(v6: [UInt8]) -> Bool {
        if blockedIPv6.contains(v6) { return true }
        if v6[0] == 0xFE && v6[1] & 0xC0 == 0x80 { return true }  // fe80::/10 link-local
        // ::ffff:a.b.c.d and ::a.b.c.d carry an IPv4 address.
        let prefix = Array(v6[0..<10])
        if prefix.allSatisfy({ $0 == 0 }) && ((v6[10] == 0xff && v6[11] == 0xff) || (v6[10] == 0 && v6[11] == 0)) {
            let v4 = UInt32(v6[12]) << 24 | UInt32(v6[13]) << 16 | UInt32(v6[14]) << 8 | UInt32(v6[15])
            return isBlocked(v4: v4)
        }
        return false
    }

    static func ipv4(_ host: String) -> UInt32? {
        var addr = in_addr()
        guard inet_aton(host, &addr) != 0 else { return nil }
        return UInt32(bigEndian: addr.s_addr)
    }

    static func ipv6(_ host: String) -> [UInt8]? {
        var addr = in6_addr()
        let trimmed = host.split(separator: "%", maxSplits: 1).first.map(String.init) ?? host
        guard inet_pton(AF_INET6, trimmed, &addr) == 1 else { return nil }
        return withUnsafeBytes(of: &addr) { Array($0) }
    }

    enum Address {
        case v4(UInt32)
        case v6([UInt8])
    }

    static func resolveAll(_ host: String) -> [Address] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(first) }
        var result: [Address] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let sa = info.pointee.ai_addr {
                if info.pointee.ai_family == AF_INET {
                    let v4 = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) }
                    result.append(.v4(v4))
                } else if info.pointee.ai_family == AF_INET6 {
                    let v6 = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { ptr in
                        withUnsafeBytes(of: ptr.pointee.sin6_addr) { Array($0) }
                    }
                    result.append(.v6(v6))
                }
            }
            cursor = info.pointee.ai_next
        }
        return result
    }
}
