import XCTest
@testable import DPO

/// The engine's Tokenizer against HF tokenizers on the 5,200-string corpus of
/// Fixtures/tokenizer (tools/make_tokenizer_fixtures.py): encode with and without special tokens,
/// decode, decode skipping special tokens.
final class TokenizerGoldenTests: XCTestCase {
    static let fixtures = TestModels.fixturesDirectory() + "/tokenizer"

    struct Golden {
        var ids: [[Int32]]
        var withSpecial: [[Int32]]
        var decoded: [Int: String]
        var decodedSkip: [(Int, String)]
    }

    static let corpus: [String] = {
        let json = try! JSON.parse(try! readFile(fixtures + "/corpus.json"))
        return json.array!.map { $0.string! }
    }()

    /// Reads `<name>.golden.json` (ids packed as fixed-width base-64 digits, see the script).
    static func golden(_ name: String) throws -> Golden {
        let o = try JSON.parse(try readFile(fixtures + "/\(name).golden.json", limit: 4 << 20)).object!
        let width = o["width"]!.int!
        let digits = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_".utf8)
        var value = [Int32](repeating: -1, count: 256)
        for (i, d) in digits.enumerated() { value[Int(d)] = Int32(i) }
        let lines = o["ids"]!.string!.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        let ids: [[Int32]] = lines.map { line in
            let chars = Array(line)
            return stride(from: 0, to: chars.count, by: width).map { start in
                (start..<(start + width)).reduce(Int32(0)) { $0 << 6 | value[Int(chars[$1])] }
            }
        }
        XCTAssertEqual(ids.count, o["count"]!.int!)
        let withSpecial = o["with_special"]!.array!.map { $0.array!.map { Int32($0.int!) } }
        var decoded: [Int: String] = [:]
        for pair in o["decoded"]!.array! { decoded[pair.array![0].int!] = pair.array![1].string! }
        let skip = o["decoded_skip"]!.array!.map { ($0.array![0].int!, $0.array![1].string!) }
        return Golden(ids: ids, withSpecial: withSpecial, decoded: decoded, decodedSkip: skip)
    }

    /// Compares everything; reports the first few mismatches with their text.
    func check(_ tokenizer: Tokenizer, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let g = try TokenizerGoldenTests.golden(name)
        let corpus = TokenizerGoldenTests.corpus
        var failures = 0
        for (i, expected) in g.ids.enumerated() {
            let got = tokenizer.encode(corpus[i], addSpecialTokens: false)
            if got != expected {
                failures += 1
                if failures <= 8 { XCTFail("\(name) encode #\(i) \(corpus[i].debugDescription): \(got) != \(expected)", file: file, line: line) }
                continue
            }
            let text = try tokenizer.decode(expected)
            let want = g.decoded[i] ?? corpus[i]
            if text != want {
                failures += 1
                if failures <= 8 { XCTFail("\(name) decode #\(i): \(text.debugDescription) != \(want.debugDescription)", file: file, line: line) }
            }
        }
        for (i, expected) in g.withSpecial.enumerated() {
            XCTAssertEqual(tokenizer.encode(corpus[i]), expected, "\(name) encode with special tokens #\(i)", file: file, line: line)
        }
        for (i, want) in g.decodedSkip {
            XCTAssertEqual(try tokenizer.decode(g.ids[i], skipSpecialTokens: true), want, "\(name) decode skipping specials #\(i)", file: file, line: line)
        }
        XCTAssertEqual(failures, 0, "\(name): \(failures) of \(g.ids.count) strings differ", file: file, line: line)
    }

    func testSentencePieceBPEFromTokenizerJSON() throws {
        let t = try Tokenizer.load(path: TokenizerGoldenTests.fixtures + "/spm")
        try check(t, "spm")
        XCTAssertEqual(t.bosTokenID, 1)
        XCTAssertEqual(t.eosTokenID, 2)
        XCTAssertEqual(t.bosToken, "<s>")
        XCTAssertNil(t.padTokenID)
        XCTAssertEqual(t.vocabSize, 702)
        XCTAssertNotNil(t.chatTemplate)
    }

    func testSentencePieceBPEFromGGUF() throws {
        let t = try Tokenizer.load(path: TokenizerGoldenTests.fixtures + "/spm.gguf")
        try check(t, "spm-gguf")
        XCTAssertEqual(t.bosTokenID, 1)
        XCTAssertEqual(t.eosTokenID, 2)
        XCTAssertEqual(t.vocabSize, 702)
        XCTAssertEqual(t.chatTemplate?.hasPrefix("{% for message in messages %}"), true)
    }

    func testLlama3ByteLevel() throws {
        let t = try Tokenizer.load(path: TokenizerGoldenTests.fixtures + "/llama3")
        try check(t, "llama3")
        XCTAssertEqual(t.bosToken, "<|begin_of_text|>")
        XCTAssertEqual(t.encode("").first, t.bosTokenID)
    }

    func testQwen2ByteLevel() throws {
        let t = try Tokenizer.load(path: TokenizerGoldenTests.fixtures + "/qwen2")
        try check(t, "qwen2")
        XCTAssertNil(t.bosTokenID)
        XCTAssertEqual(t.eosToken, "<|im_end|>")
        XCTAssertEqual(t.padTokenID, 0)
    }

    func testSmolLM2FromGGUF() throws {
        let path = try TestModels.smolLM2GGUF()
        let t = try Tokenizer.load(path: path)
        try check(t, "smollm2")
        XCTAssertEqual(t.vocabSize, 49152)
        XCTAssertEqual(t.bosTokenID, 1)
        XCTAssertEqual(t.eosTokenID, 2)
        XCTAssertEqual(t.padTokenID, 2)
        XCTAssertEqual(t.id(for: "<|im_start|>"), 1)
        XCTAssertEqual(t.token(for: 2), "<|im_end|>")
        XCTAssertEqual(t.encode("Hi"), t.encode("Hi", addSpecialTokens: false), "SmolLM2 adds no BOS")
        XCTAssertEqual(t.chatTemplate?.contains("<|im_start|>"), true)
    }
}
