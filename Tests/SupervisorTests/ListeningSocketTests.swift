import Testing

@testable import Supervisor

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct ListeningSocketTests {
    @Test func bindsAnEphemeralPortAndReportsIt() throws {
        let socket = try ListeningSocket.bind(.init(host: "127.0.0.1", port: 0))
        defer { close(socket.fileDescriptor) }
        #expect(socket.localAddress.hasPrefix("127.0.0.1:"))
        #expect(socket.localAddress != "127.0.0.1:0")
        #expect(!socket.fromSystemd)
    }

    @Test func aBusyPortIsAOneLineErrorNamingTheFlag() throws {
        let first = try ListeningSocket.bind(.init(host: "127.0.0.1", port: 0))
        defer { close(first.fileDescriptor) }
        let port = Int(first.localAddress.split(separator: ":").last!)!
        #expect {
            _ = try ListeningSocket.bind(.init(host: "127.0.0.1", port: port))
        } throws: { error in
            "\(error)".hasPrefix("--bind 127.0.0.1:\(port): cannot listen: Address already in use")
        }
    }

    @Test func withoutListenFDsNothingIsAdopted() throws {
        unsetenv("LISTEN_FDS")
        #expect(try ListeningSocket.adoptFromSystemd() == nil)
    }
}
