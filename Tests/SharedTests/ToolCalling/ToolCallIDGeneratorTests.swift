import Testing

@testable import Shared

@Suite("Tool-call id generator")
struct ToolCallIDGeneratorTests {
    private static func isWellFormed(_ id: String) -> Bool {
        let bytes = Array(id.utf8)
        return bytes.count == 29 && id.hasPrefix("call_")
            && bytes.dropFirst(5).allSatisfy {
                ToolCallBytes.isNameByte($0) && $0 != UInt8(ascii: "_") && $0 != UInt8(ascii: "-")
            }
    }

    @Test("random ids are well formed and distinct")
    func random() {
        var generator = ToolCallIDGenerator.random
        let ids = (0..<1000).map { _ in generator.next() }
        #expect(ids.allSatisfy(Self.isWellFormed))
        #expect(Set(ids).count == ids.count)
    }

    @Test("seeded ids are well formed and reproducible; copies continue independently")
    func seeded() {
        var first = ToolCallIDGenerator.seeded(42)
        var copy = first
        let a = (0..<5).map { _ in first.next() }
        let b = (0..<5).map { _ in copy.next() }
        #expect(a == b)
        #expect(Set(a).count == 5)
        #expect(a.allSatisfy(Self.isWellFormed))
        var other = ToolCallIDGenerator.seeded(43)
        #expect(other.next() != a[0])
    }

    @Test("custom ids receive the ordinal")
    func custom() {
        var generator = ToolCallIDGenerator { "x\($0)" }
        #expect([generator.next(), generator.next()] == ["x0", "x1"])
    }
}
