import Foundation
import Testing

@testable import Shared

/// Seeded differential fuzzing of the request-body scanner against Foundation's parser:
/// the gateway must never forward a body Foundation calls invalid JSON, and must not refuse
/// a plain valid one.
@Suite struct JSONScannerFuzzTests {
    static let seeds: [String] = [
        #"{"model":"qwen","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":64}"#,
        #"{"model":"m","input":["a","b"],"temperature":0.7,"stop":null,"n":1}"#,
        #"{"model":"m","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{}}}}]}"#,
        #"{"a":{"b":[1,2,{"c":false}]},"d":-1.5e-3,"e":"\"quoted\" \\ / \n\t"}"#,
    ]

    static let alphabet: [UInt8] = Array(#"{}[]:,"\ 0123456789-+.eEtrufalsn"#.utf8) + [0x0A, 0xC3, 0xA9, 0xFF, 0x00]

    func mutate(_ input: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var bytes = input
        for _ in 0..<(1 + Int(rng.next() % 4)) {
            guard !bytes.isEmpty else { break }
            let at = Int(rng.next() % UInt64(bytes.count))
            switch rng.next() % 4 {
            case 0: bytes.remove(at: at)
            case 1: bytes.insert(Self.alphabet[Int(rng.next() % UInt64(Self.alphabet.count))], at: at)
            case 2: bytes[at] = Self.alphabet[Int(rng.next() % UInt64(Self.alphabet.count))]
            default:
                let end = min(bytes.count, at + Int(rng.next() % 8))
                bytes.insert(contentsOf: bytes[at..<end], at: at)
            }
        }
        return bytes
    }

    func foundationAccepts(_ bytes: [UInt8]) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
    }

    @Test func scannerAgreesWithFoundationOnMutatedBodies() {
        var rng = SplitMix64(seed: 0x5EED)
        var accepted = 0
        for iteration in 0..<20_000 {
            let seed = Array(Self.seeds[iteration % Self.seeds.count].utf8)
            let bytes = mutate(seed, &rng)
            let scanned = try? JSONScanner.objectMembers(bytes)
            let foundation = foundationAccepts(bytes)
            if scanned != nil {
                accepted += 1
                #expect(foundation != nil, "scanner accepted what Foundation refuses: \(String(decoding: bytes, as: UTF8.self))")
                if let scanned, let foundation {
                    #expect(Set(scanned.map(\.key)) == Set(foundation.keys))
                }
            } else if foundation != nil, !bytes.contains(UInt8(ascii: "\\")), !hasTrailingComma(bytes) {
                // Foundation accepts it and nothing exotic is involved: the scanner must too,
                // unless it refused on purpose (a duplicate top-level key).
                let text = String(decoding: bytes, as: UTF8.self)
                let refusal = (try? JSONScanner.objectMembers(bytes)) == nil
                #expect(!refusal || text.contains("model") && duplicateTopLevelKey(bytes), "scanner refused valid JSON: \(text)")
            }
        }
        #expect(accepted > 100)  // the generator reaches valid documents, not only garbage
    }

    @Test func randomBytesNeverCrashAndAreRefusedWithAnOffsetInRange() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<5_000 {
            let bytes = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            do {
                _ = try JSONScanner.objectMembers(bytes)
            } catch let failure as JSONScanner.Failure {
                #expect(failure.offset <= bytes.count)
            } catch {
                Issue.record("unexpected error \(error)")
            }
            _ = try? OpenAIRequestBody(bytes: bytes)
        }
    }

    /// Foundation on Linux accepts `{"a":1,}`; RFC 8259 (and the scanner) do not.
    func hasTrailingComma(_ bytes: [UInt8]) -> Bool {
        let significant = bytes.filter { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
        return zip(significant, significant.dropFirst()).contains { $0 == UInt8(ascii: ",") && ($1 == UInt8(ascii: "}") || $1 == UInt8(ascii: "]")) }
    }

    func duplicateTopLevelKey(_ bytes: [UInt8]) -> Bool {
        // Foundation keeps the last of duplicate keys; the scanner refuses them on purpose.
        guard let object = foundationAccepts(bytes) else { return false }
        let keyCount = object.count
        var rawKeys = 0
        var depth = 0
        var inString = false
        var escaped = false
        var expectingKey = false
        for byte in bytes {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""):
                inString = true
                if depth == 1 && expectingKey { rawKeys += 1 }
                expectingKey = false
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                expectingKey = depth == 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            case UInt8(ascii: ","): expectingKey = depth == 1
            default: break
            }
        }
        return rawKeys > keyCount
    }
}
