import Testing

@testable import Shared

@Suite struct DecimalTextTests {
    /// Thousandths print as `Double(n) / 1000` prints (the access line's milliseconds, the
    /// rate-limit reset's seconds), without formatting a Double.
    @Test(arguments: [0, 1, 10, 100, 999, 1000, 1001, 1010, 1100, 1610, 12346, 120_000, 999_999, 1_234_567, 86_400_000_000])
    func thousandthsReadAsTheDoubleWould(thousandths: Int) {
        var out: [UInt8] = []
        DecimalText.appendThousandths(thousandths, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == String(Double(thousandths) / 1e3))
    }

    @Test(arguments: [0, 1, 9, 10, 99, 100, 499, 1234, 65_536, -1, -10, -987, Int.max, Int.min])
    func numbersReadAsSwiftPrintsThem(number: Int) {
        var out: [UInt8] = []
        DecimalText.append(number, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == String(number))
    }
}
