import CGatewayShims
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// The listening socket all workers share: bound here, or adopted from systemd.
struct ListeningSocket {
    /// The descriptor (close-on-exec; workers get it as fd 3 through posix_spawn).
    let fileDescriptor: Int32
    /// Human-readable local address, for the start-up log line.
    let localAddress: String
    /// True when systemd passed the socket (`LISTEN_FDS`): systemd keeps its own copy.
    let fromSystemd: Bool

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Takes over systemd's first passed socket when `LISTEN_PID` is this process, and
    /// removes the `LISTEN_*` variables so no child sees them.
    static func adoptFromSystemd() throws -> ListeningSocket? {
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_FDNAMES")
        }
        guard let pidText = getenv("LISTEN_PID").map({ String(cString: $0) }),
            let countText = getenv("LISTEN_FDS").map({ String(cString: $0) }),
            Int32(pidText) == getpid(), let count = Int(countText), count >= 1
        else { return nil }
        let fd: Int32 = 3  // SD_LISTEN_FDS_START
        var type: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0, type == Int32(SOCK_STREAM.rawValue) else {
            throw Failure(description: "LISTEN_FDS: descriptor 3 is not a stream socket")
        }
        var accepting: Int32 = 0
        length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0, accepting == 0 {
            guard listen(fd, 4096) == 0 else { throw Failure(description: "LISTEN_FDS: listen failed: \(errnoText())") }
        }
        gw_set_cloexec(fd)
        for extra in 1..<count { close(fd + Int32(extra)) }
        return ListeningSocket(fileDescriptor: fd, localAddress: localName(fd) ?? "systemd socket", fromSystemd: true)
    }

    /// Binds and listens on `address`.
    static func bind(_ address: BindAddress) throws -> ListeningSocket {
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(address.host, String(address.port), &hints, &list)
        guard rc == 0, let info = list else {
            throw Failure(description: "--bind \(address): cannot resolve host: \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(info) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "--bind \(address): socket: \(errnoText())") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard Glibc.bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let message = errnoText()
            close(fd)
            throw Failure(description: "--bind \(address): cannot listen: \(message)")
        }
        guard listen(fd, 4096) == 0 else {
            let message = errnoText()
            close(fd)
            throw Failure(description: "--bind \(address): listen: \(message)")
        }
        return ListeningSocket(fileDescriptor: fd, localAddress: localName(fd) ?? address.description, fromSystemd: false)
    }

    /// `HOST:PORT` the socket is bound to (the real port when 0 was asked for).
    static func localName(_ fd: Int32) -> String? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { return nil }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var port = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), &port, socklen_t(port.count), NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        guard rc == 0 else { return nil }
        let h = cString(host)
        let p = cString(port)
        return h.contains(":") ? "[\(h)]:\(p)" : "\(h):\(p)"
    }
}

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// The text of a NUL-terminated C buffer.
func cString(_ buffer: [CChar]) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
