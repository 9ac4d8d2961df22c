/// The bytes and the searches the scanner needs.
extension MultipartFormScanner {
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")
    static let dash = UInt8(ascii: "-")
    static let space = UInt8(ascii: " ")
    static let tab = UInt8(ascii: "\t")

    /// The first `byte` in `buffer` from `start` on.
    static func index(of byte: UInt8, in buffer: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var i = start
        while i < buffer.count {
            if buffer[i] == byte { return i }
            i += 1
        }
        return nil
    }

    /// For each prefix of `pattern`, the length of its longest proper prefix that is also its suffix.
    static func borders(of pattern: [UInt8]) -> [Int] {
        var borders = [Int](repeating: 0, count: pattern.count)
        var k = 0
        for i in 1..<max(1, pattern.count) {
            while k > 0 && pattern[i] != pattern[k] { k = borders[k - 1] }
            if pattern[i] == pattern[k] { k += 1 }
            borders[i] = k
        }
        return borders
    }

    static func contains(_ pattern: [UInt8], in bytes: [UInt8]) -> Bool {
        guard bytes.count >= pattern.count else { return false }
        return (0...(bytes.count - pattern.count)).contains { bytes[$0..<($0 + pattern.count)].elementsEqual(pattern) }
    }
}
