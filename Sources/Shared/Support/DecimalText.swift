/// Decimal numbers written as ASCII bytes, for text built on the request path (the access
/// line, rate-limit headers) without a `String` or a floating-point format per number.
public enum DecimalText {
    /// `number` in decimal, as `String(number)` prints it.
    public static func append(_ number: Int, to out: inout [UInt8]) {
        guard number != 0 else {
            out.append(UInt8(ascii: "0"))
            return
        }
        if number < 0 { out.append(UInt8(ascii: "-")) }
        var divisor = 1
        while number / divisor / 10 != 0 { divisor *= 10 }
        while divisor != 0 {
            out.append(UInt8(48 + abs(number / divisor % 10)))
            divisor /= 10
        }
    }

    /// `thousandths / 1000` (not negative) as Swift prints that `Double`: `1.61`, `2.0`,
    /// `1234.567` — up to three decimals, no trailing zero but one.
    public static func appendThousandths(_ thousandths: Int, to out: inout [UInt8]) {
        let thousandths = max(0, thousandths)
        append(thousandths / 1000, to: &out)
        out.append(UInt8(ascii: "."))
        var fraction = thousandths % 1000
        guard fraction != 0 else {
            out.append(UInt8(ascii: "0"))
            return
        }
        var divisor = 100
        while fraction != 0 {
            out.append(UInt8(48 + fraction / divisor))
            fraction %= divisor
            divisor /= 10
        }
    }
}
