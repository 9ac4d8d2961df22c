import NIOCore

/// One command as Redis reads it: its name and arguments, sent as an array of bulk strings.
public struct RedisCommand: Sendable, Hashable {
    /// The name first (`EVALSHA`), then the arguments.
    public var arguments: [String]

    /// `RedisCommand("SET", "k", "v")`.
    public init(_ name: String, _ arguments: String...) { self.arguments = [name] + arguments }

    /// The name first, then the arguments.
    public init(arguments: [String]) { self.arguments = arguments }

    /// The command's bytes: `*N\r\n` then `$len\r\narg\r\n` for each argument.
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "*"))
        buffer.writeDecimalLine(arguments.count)
        for argument in arguments {
            buffer.writeInteger(UInt8(ascii: "$"))
            buffer.writeDecimalLine(argument.utf8.count)
            buffer.writeString(argument)
            buffer.writeStaticString("\r\n")
        }
    }

    /// An upper bound of the encoded size, to allocate once.
    var encodedCapacity: Int { arguments.reduce(16) { $0 + $1.utf8.count + 16 } }
}

extension ByteBuffer {
    /// `value` in decimal followed by CRLF (a small string: no allocation).
    fileprivate mutating func writeDecimalLine(_ value: Int) {
        writeString(String(value))
        writeStaticString("\r\n")
    }
}
