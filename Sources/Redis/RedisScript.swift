import Crypto

/// A Lua script run with `EVALSHA` by its SHA1, so its text crosses the network only when
/// Redis does not have it yet (after a restart or `SCRIPT FLUSH`: `NOSCRIPT`, then
/// `SCRIPT LOAD` and one retry; see ``RedisConnection/evalSHA(script:keys:args:)``).
public struct RedisScript: Sendable, Hashable {
    /// The Lua source.
    public let source: String
    /// SHA1 of the source, 40 lowercase hex digits, as Redis names the script.
    public let sha1: String

    /// The script `source`, its SHA1 computed once here.
    public init(_ source: String) {
        self.source = source
        let digest = Insecure.SHA1.hash(data: Array(source.utf8))
        let hex = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(40)
        for byte in digest {
            text.append(hex[Int(byte >> 4)])
            text.append(hex[Int(byte & 0x0F)])
        }
        self.sha1 = String(decoding: text, as: UTF8.self)
    }

    /// `EVALSHA sha1 numkeys key... arg...`.
    func evalSHA(keys: [String], args: [String]) -> RedisCommand {
        RedisCommand(arguments: ["EVALSHA", sha1, String(keys.count)] + keys + args)
    }

    /// `SCRIPT LOAD source`.
    var load: RedisCommand { RedisCommand("SCRIPT", "LOAD", source) }
}
