import Foundation
import XCTest
@testable import DPO

// MARK: - Helpers

/// A fresh empty directory under the system temp directory, removed at the end of the test.
private func makeTempDirectory(_ test: XCTestCase) throws -> String {
    let path = NSTemporaryDirectory() + "dpo-io-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

private func directoryListing(_ path: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: path).sorted()
}

/// Asserts that `body` throws a `DPOError` whose message contains every one of `words`.
private func assertThrows<T>(_ words: [String], file: StaticString = #filePath, line: UInt = #line,
                             _ body: () throws -> T) {
    do {
        _ = try body()
        XCTFail("expected an error containing \(words)", file: file, line: line)
    } catch let error as DPOError {
        for word in words where !error.message.contains(word) {
            XCTFail("error '\(error.message)' does not contain '\(word)'", file: file, line: line)
        }
    } catch {
        XCTFail("unexpected non-DPOError \(error)", file: file, line: line)
    }
}

/// The bytes of a safetensors file with the given header text and data section.
/// `headerLength` overrides the length field.
private func safetensorsBytes(header: String, data: [UInt8], headerLength: UInt64? = nil) -> [UInt8] {
    let headerBytes = Array(header.utf8)
    var out: [UInt8] = []
    withUnsafeBytes(of: (headerLength ?? UInt64(headerBytes.count)).littleEndian) { out += $0 }
    return out + headerBytes + data
}

private func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}

private func writeBytes(_ bytes: [UInt8], to path: String) {
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

private func writeF32(_ path: String, _ tensors: [(String, [Int], [Float])], metadata: [String: String] = [:]) throws {
    try writeF32Tensors(path, tensors, metadata: metadata)
}

// MARK: - JSON

final class IOTests: XCTestCase {

    func testJSONParsesAllValueKinds() throws {
        let text = #" { "a" : [1, -2.5, 1e3, 0, -0, true, false, null, "x"], "b": {}, "c": [] } "#
        let value = try JSON.parse(text)
        let object = try XCTUnwrap(value.object)
        XCTAssertEqual(object.keys, ["a", "b", "c"])
        XCTAssertEqual(object["a"], .array([.number(1), .number(-2.5), .number(1000), .number(0), .number(-0.0),
                                            .bool(true), .bool(false), .null, .string("x")]))
        XCTAssertEqual(object["b"], .object(JSONObject()))
        XCTAssertEqual(object["c"], .array([]))
        XCTAssertEqual(try JSON.parse("7"), .number(7))
        XCTAssertEqual(try JSON.parse(" \"s\"\n"), .string("s"))
        XCTAssertEqual(try JSON.parse([UInt8]("null".utf8)), .null)
    }

    func testJSONPrettySerializationMatchesPython() throws {
        // json.dumps({"a": 576, "b": [0.1, 1e-05, True, None], "c": {}, "d": [], "e": {"f": "g"}}, indent=2)
        let expected = """
        {
          "a": 576,
          "b": [
            0.1,
            1e-05,
            true,
            null
          ],
          "c": {},
          "d": [],
          "e": {
            "f": "g"
          }
        }
        """
        let value = try JSON.parse(expected)
        XCTAssertEqual(JSON.serialize(value), expected)
        XCTAssertEqual(JSON.serialize(value, pretty: false),
                       #"{"a":576,"b":[0.1,1e-05,true,null],"c":{},"d":[],"e":{"f":"g"}}"#)
        XCTAssertEqual(try JSON.parse(JSON.serialize(value, pretty: false)), value)
    }

    func testJSONNumberFormatting() throws {
        let cases: [(Double, String)] = [
            (576, "576"), (-3, "-3"), (0, "0"), (-0.0, "-0"), (0.1, "0.1"), (1e-05, "1e-05"),
            (1.5, "1.5"), (1e300, "1e+300"), (Double.leastNonzeroMagnitude, "5e-324"), (9007199254740991, "9007199254740991"),
            (.infinity, "null"), (-.infinity, "null"), (.nan, "null"),
        ]
        for (number, text) in cases {
            XCTAssertEqual(JSON.serialize(.number(number)), text)
        }
        // Every finite number round-trips bit for bit.
        for number in [0.1, 1.0 / 3.0, 1e-05, 123456.789, -2.5e-300, 1.7976931348623157e308, 1e16, 2e53, -0.0] {
            let back = try XCTUnwrap(JSON.parse(JSON.serialize(.number(number))).double)
            XCTAssertEqual(back.bitPattern, number.bitPattern, "\(number)")
        }
    }

    func testJSONStringEscapes() throws {
        let parsed = try JSON.parse(#""q\" b\\ s\/ \b\f\n\r\t \u0041\u00e9\u20AC \ud83d\ude00 é""#)
        XCTAssertEqual(parsed, .string("q\" b\\ s/ \u{8}\u{C}\n\r\t Aé€ 😀 é"))
        let tricky = "a\"b\\c\n\r\t\u{8}\u{C}\u{1}\u{1F}é😀"
        let text = JSON.serialize(.string(tricky))
        XCTAssertEqual(text, #""a\"b\\c\n\r\t\b\f\u0001\u001fé😀""#)
        XCTAssertEqual(try JSON.parse(text), .string(tricky))
        XCTAssertEqual(JSON.serialize(.object(["k\n": .string("v")]), pretty: false), #"{"k\n":"v"}"#)
    }

    func testJSONRejectsMalformedInput() {
        let bad: [String] = [
            "", " ", "1 2", "{} x", "[1]]", "nul", "tru", "True", "NaN", "-NaN", "Infinity", "-Infinity",
            "01", "-01", "00", "1.", ".5", "1e", "1e+", "+1", "-", "0x10", "1e400", "-1e400",
            "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{'a':1}", "['a']", "{\"a\":1",
            "[1", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12G4\"", "\"\\ud800\"", "\"\\udc00\"",
            "\"\\ud800\\u0041\"", "\"\\ud800x\"", "/* c */ 1", "1 // c", "\u{FEFF}1",
            "\"a\u{01}b\"", "\"tab\there\"", "\"new\nline\"",
        ]
        for text in bad {
            assertThrows(["at byte"]) { try JSON.parse(text) }
        }
        // Invalid UTF-8 inside and outside strings.
        for bytes: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0xFF]] {
            assertThrows(["at byte"]) { try JSON.parse(bytes) }
        }
        assertThrows(["leading zero", "at byte 1"]) { try JSON.parse("[01]") }
        assertThrows(["control character", "at byte 2"]) { try JSON.parse("\"a\u{01}\"") }
        assertThrows(["after the top-level value", "at byte 3"]) { try JSON.parse("{} 1") }
    }

    func testJSONNestingLimit() throws {
        let ok = String(repeating: "[", count: JSON.maxDepth) + String(repeating: "]", count: JSON.maxDepth)
        XCTAssertNoThrow(try JSON.parse(ok))
        let tooDeep = String(repeating: "[", count: JSON.maxDepth + 1) + String(repeating: "]", count: JSON.maxDepth + 1)
        assertThrows(["nesting"]) { try JSON.parse(tooDeep) }
        // Far deeper input must fail cleanly, not overflow the stack.
        assertThrows(["nesting"]) { try JSON.parse(String(repeating: "{\"a\":[", count: 200_000)) }
    }

    func testJSONDuplicateKeysLastWins() throws {
        let object = try XCTUnwrap(JSON.parse(#"{"a": 1, "b": 2, "a": 3}"#).object)
        XCTAssertEqual(object.keys, ["a", "b"])
        XCTAssertEqual(object["a"], .number(3))
    }

    func testJSONObjectOrderAndMutation() {
        var object = JSONObject()
        object["z"] = .number(1)
        object["a"] = .number(2)
        object["m"] = .number(3)
        XCTAssertEqual(object.keys, ["z", "a", "m"])
        object["a"] = .string("replaced")
        XCTAssertEqual(object.keys, ["z", "a", "m"])
        object["z"] = nil
        XCTAssertEqual(object.keys, ["a", "m"])
        XCTAssertNil(object["z"])
        object["z"] = .null
        XCTAssertEqual(object.keys, ["a", "m", "z"])
        XCTAssertEqual(JSON.serialize(.object(object), pretty: false), #"{"a":"replaced","m":3,"z":null}"#)
        XCTAssertEqual(object.count, 3)
        // Equality ignores key order.
        XCTAssertEqual(JSONObject(dictionaryLiteral: ("x", .number(1)), ("y", .number(2))),
                       JSONObject(dictionaryLiteral: ("y", .number(2)), ("x", .number(1))))
    }

    func testJSONAccessors() {
        XCTAssertEqual(JSONValue.number(576).int, 576)
        XCTAssertEqual(JSONValue.number(-3).int, -3)
        XCTAssertNil(JSONValue.number(3.5).int)
        XCTAssertNil(JSONValue.number(1e300).int)
        XCTAssertNil(JSONValue.number(0x1p63).int)
        XCTAssertEqual(JSONValue.number(-0x1p63).int, Int.min)
        XCTAssertNil(JSONValue.string("1").int)
        XCTAssertEqual(JSONValue.number(2.5).double, 2.5)
        XCTAssertNil(JSONValue.bool(true).double)
        XCTAssertEqual(JSONValue.string("s").string, "s")
        XCTAssertEqual(JSONValue.bool(false).bool, false)
        XCTAssertEqual(JSONValue.array([.null]).array, [.null])
        XCTAssertEqual(JSONValue.object(JSONObject()).object, JSONObject())
        XCTAssertTrue(JSONValue.null.isNull)
        XCTAssertFalse(JSONValue.number(0).isNull)
    }

    // MARK: - File helpers

    func testReadFileAndDirectories() throws {
        let dir = try makeTempDirectory(self)
        let nested = dir + "/a/b/c"
        try makeDirectories(nested)
        try makeDirectories(nested)  // already there: fine
        XCTAssertTrue(isDirectory(nested))
        XCTAssertTrue(fileExists(nested))
        XCTAssertFalse(fileExists(dir + "/missing"))

        let bytes = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try writeFileAtomically(nested + "/f.bin", bytes: bytes)
        XCTAssertEqual(try readFile(nested + "/f.bin"), bytes)
        XCTAssertFalse(isDirectory(nested + "/f.bin"))
        XCTAssertEqual(try readFile(nested + "/f.bin").count, 200_000)
        try writeFileAtomically(nested + "/empty", bytes: [])
        XCTAssertEqual(try readFile(nested + "/empty"), [])

        assertThrows(["cannot open", dir + "/missing", "No such file"]) { try readFile(dir + "/missing") }
        assertThrows(["directory", nested]) { try readFile(nested) }
        assertThrows(["cannot create directory"]) { try makeDirectories(nested + "/f.bin/sub") }
    }

    func testAtomicWriteReplacesTargetAndLeavesNoTempFiles() throws {
        let dir = try makeTempDirectory(self)
        let target = dir + "/out.txt"
        try writeFileAtomically(target, bytes: Array("old".utf8))
        try writeFileAtomically(target) { writer in
            try writer.write("new ")
            try writer.write([0x41, 0x42])
            try [UInt8](repeating: 0x43, count: 3).withUnsafeBytes { try writer.write($0) }
            XCTAssertEqual(writer.bytesWritten, 9)
        }
        XCTAssertEqual(String(decoding: try readFile(target), as: UTF8.self), "new ABCCC")
        XCTAssertEqual(try directoryListing(dir), ["out.txt"])
    }

    func testAtomicWriteFailureLeavesTargetUntouched() throws {
        struct Boom: Error {}
        let dir = try makeTempDirectory(self)
        let target = dir + "/out.txt"
        try writeFileAtomically(target, bytes: Array("original".utf8))
        XCTAssertThrowsError(try writeFileAtomically(target) { writer in
            try writer.write(Array(repeating: 0x58, count: 100_000))
            throw Boom()
        }) { XCTAssertTrue($0 is Boom) }
        XCTAssertEqual(String(decoding: try readFile(target), as: UTF8.self), "original")
        XCTAssertEqual(try directoryListing(dir), ["out.txt"])

        // A failure before anything exists leaves nothing behind either.
        XCTAssertThrowsError(try writeFileAtomically(dir + "/new.txt") { _ in throw Boom() })
        XCTAssertEqual(try directoryListing(dir), ["out.txt"])

        assertThrows(["cannot open", "no-such-dir"]) { try writeFileAtomically(dir + "/no-such-dir/x", bytes: [1]) }
    }

    // MARK: - Safetensors

    func testSafetensorsRoundTripIsBitExact() throws {
        let dir = try makeTempDirectory(self)
        let path = dir + "/model.safetensors"
        let special: [Float] = [0, -0.0, 1, -1, .pi, .leastNonzeroMagnitude, -.leastNormalMagnitude,
                                .greatestFiniteMagnitude, .infinity, -.infinity, 1e-30, 3.4e38]
        let big = (0..<10_000).map { Float(bitPattern: UInt32(truncatingIfNeeded: $0 &* 2_654_435_761) & 0x7F7F_FFFF) }
        try writeF32(path, [
            ("z.weight", [3, 4], special),
            ("a.big", [100, 100], big),
            ("m.scalar", [], [42]),
            ("e.empty", [0, 5], []),
        ], metadata: ["format": "pt"])

        let file = try SafetensorsFile.open(path)
        XCTAssertEqual(file.tensorNames, ["a.big", "e.empty", "m.scalar", "z.weight"])
        XCTAssertEqual(file.metadata, ["format": "pt"])
        XCTAssertEqual(file.info("z.weight"),
                       SafetensorsTensorInfo(name: "z.weight", dtype: .F32, shape: [3, 4], byteRange: 40_004..<40_052))
        XCTAssertEqual(file.info("a.big")?.byteRange, 0..<40_000)
        XCTAssertEqual(file.info("m.scalar")?.count, 1)
        XCTAssertEqual(file.info("e.empty")?.count, 0)
        XCTAssertNil(file.info("nope"))
        XCTAssertEqual(try file.floats("z.weight").map(\.bitPattern), special.map(\.bitPattern))
        XCTAssertEqual(try file.floats("a.big").map(\.bitPattern), big.map(\.bitPattern))
        XCTAssertEqual(try file.floats("m.scalar"), [42])
        XCTAssertEqual(try file.floats("e.empty"), [])

        // Layout: header padded to a multiple of 8, metadata first, compact JSON.
        let bytes = try readFile(path)
        let headerLength = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        XCTAssertEqual(headerLength % 8, 0)
        XCTAssertEqual(bytes.count, 8 + headerLength + 40_052)
        let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix(#"{"__metadata__":{"format":"pt"},"a.big":{"dtype":"F32","shape":[100,100],"data_offsets":[0,40000]}"#), header)
        XCTAssertEqual(try directoryListing(dir), ["model.safetensors"])

        // Destination size and unknown names are checked.
        var small = [Float](repeating: 0, count: 3)
        assertThrows(["z.weight", "12 elements"]) { try small.withUnsafeMutableBufferPointer { try file.readFloats("z.weight", into: $0) } }
        assertThrows(["no tensor named 'nope'", path]) { try file.floats("nope") }
    }

    func testSafetensorsWriterRejectsBadInput() throws {
        let dir = try makeTempDirectory(self)
        let path = dir + "/w.safetensors"
        assertThrows(["shape"]) { try writeF32(path, [("a", [2, 2], [1, 2, 3])]) }
        assertThrows(["negative"]) { try writeF32(path, [("a", [-1], [])]) }
        assertThrows(["duplicate"]) { try writeF32(path, [("a", [1], [1]), ("a", [1], [2])]) }
        assertThrows(["__metadata__"]) { try writeF32(path, [("__metadata__", [1], [1])]) }
        XCTAssertEqual(try directoryListing(dir), [])
        // No metadata: no __metadata__ key.
        try writeF32(path, [("a", [1], [1])])
        XCTAssertEqual(try SafetensorsFile.open(path).metadata, [:])
        XCTAssertFalse(String(decoding: try readFile(path), as: UTF8.self).contains("__metadata__"))
    }

    func testHalfPrecisionConversion() throws {
        // (F16 bits, expected Float bits) computed by hand.
        let f16: [(UInt16, UInt32)] = [
            (0x0000, 0x0000_0000),  // +0
            (0x8000, 0x8000_0000),  // -0
            (0x3C00, 0x3F80_0000),  // 1
            (0xC000, 0xC000_0000),  // -2
            (0x3555, 0x3EAA_A000),  // 0.333251953125
            (0x7BFF, 0x477F_E000),  // 65504, largest normal
            (0x0400, 0x3880_0000),  // 2^-14, smallest normal
            (0x0001, 0x3380_0000),  // 2^-24, smallest subnormal
            (0x03FF, 0x387F_C000),  // 1023 * 2^-24, largest subnormal
            (0x8200, 0xB800_0000),  // -2^-15, negative subnormal
            (0x7C00, 0x7F80_0000),  // +inf
            (0xFC00, 0xFF80_0000),  // -inf
            (0x7E00, 0x7FC0_0000),  // quiet NaN
            (0x7C01, 0x7F80_2000),  // signalling NaN, payload kept
        ]
        // (BF16 bits, expected Float bits): the upper half of a Float.
        let bf16: [(UInt16, UInt32)] = [
            (0x0000, 0x0000_0000), (0x8000, 0x8000_0000), (0x3F80, 0x3F80_0000), (0x4049, 0x4049_0000),
            (0xC2F7, 0xC2F7_0000), (0x0001, 0x0001_0000), (0x7F7F, 0x7F7F_0000), (0x7F80, 0x7F80_0000),
            (0xFF80, 0xFF80_0000), (0x7FC0, 0x7FC0_0000),
        ]
        let f16Bytes = littleEndianBytes(f16.map(\.0))
        let bf16Bytes = littleEndianBytes(bf16.map(\.0))
        let f32Bytes = littleEndianBytes([Float(1.5).bitPattern, Float(-0.25).bitPattern])
        let i64Bytes = littleEndianBytes([Int64(7)])
        var offset = 0
        func range(_ n: Int) -> String { defer { offset += n }; return "[\(offset), \(offset + n)]" }
        let header = """
        {"h": {"dtype": "F16", "shape": [2, 7], "data_offsets": \(range(f16Bytes.count))},
         "b": {"dtype": "BF16", "shape": [10], "data_offsets": \(range(bf16Bytes.count))},
         "f": {"dtype": "F32", "shape": [2], "data_offsets": \(range(f32Bytes.count))},
         "i": {"dtype": "I64", "shape": [1], "data_offsets": \(range(i64Bytes.count))},
         "__metadata__": {"k": "v"}}
        """
        let dir = try makeTempDirectory(self)
        let path = dir + "/half.safetensors"
        writeBytes(safetensorsBytes(header: header, data: f16Bytes + bf16Bytes + f32Bytes + i64Bytes), to: path)

        let file = try SafetensorsFile.open(path)
        XCTAssertEqual(file.tensorNames, ["h", "b", "f", "i"])
        XCTAssertEqual(file.metadata, ["k": "v"])
        XCTAssertEqual(file.info("h")?.dtype, .F16)
        XCTAssertEqual(try file.floats("h").map(\.bitPattern), f16.map(\.1))
        XCTAssertEqual(try file.floats("b").map(\.bitPattern), bf16.map(\.1))
        XCTAssertEqual(try file.floats("f"), [1.5, -0.25])
        assertThrows(["'i'", "I64", "cannot be loaded as Float"]) { try file.floats("i") }

        // Exhaustive F16 check against Swift's own Float16 conversion where available.
        #if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
        for bits in 0...UInt16.max {
            let expected = Float(Float16(bitPattern: bits))
            let got = Float(bitPattern: floatBits(fromF16: bits))
            if expected.isNaN {
                XCTAssertTrue(got.isNaN)
            } else if got.bitPattern != expected.bitPattern {
                XCTFail("F16 0x\(String(bits, radix: 16)): got \(got), expected \(expected)")
                break
            }
        }
        #endif
    }

    func testHalfPrecisionChunkedReads() throws {
        // More elements than one conversion chunk (65536), to exercise the chunk loop.
        let count = 150_001
        let bits = (0..<count).map { UInt16(truncatingIfNeeded: $0 &* 7919) & 0x7BFF }
        let dir = try makeTempDirectory(self)
        let path = dir + "/big.safetensors"
        let header = #"{"t":{"dtype":"BF16","shape":[\#(count)],"data_offsets":[0,\#(2 * count)]}}"#
        writeBytes(safetensorsBytes(header: header, data: littleEndianBytes(bits)), to: path)
        let values = try SafetensorsFile.open(path).floats("t")
        XCTAssertEqual(values.map(\.bitPattern), bits.map { UInt32($0) << 16 })
    }

    func testSafetensorsRejectsCorruptFiles() throws {
        let dir = try makeTempDirectory(self)
        let path = dir + "/bad.safetensors"
        let eight = [UInt8](repeating: 0, count: 8)
        func entry(name: String = "w", dtype: String = "F32", shape: String = "[2]", offsets: String = "[0, 8]") -> String {
            #""\#(name)": {"dtype": "\#(dtype)", "shape": \#(shape), "data_offsets": \#(offsets)}"#
        }
        func expect(_ bytes: [UInt8], _ words: [String], line: UInt = #line) {
            writeBytes(bytes, to: path)
            assertThrows([path] + words, line: line) { try SafetensorsFile.open(path) }
        }
        func expectHeader(_ header: String, data: [UInt8] = eight, _ words: [String], line: UInt = #line) {
            expect(safetensorsBytes(header: header, data: data), words, line: line)
        }

        expect([], ["0 bytes", "too short"])
        expect([1, 0, 0], ["3 bytes", "too short"])
        expect(safetensorsBytes(header: "{}", data: [], headerLength: 1000), ["header length 1000 exceeds file size 10"])
        expect(safetensorsBytes(header: "{}", data: [], headerLength: UInt64.max), ["header length", "exceeds the limit"])
        expect(safetensorsBytes(header: "{}", data: [], headerLength: 200_000_000), ["exceeds the limit"])
        expectHeader("{\"w\": ", ["not valid JSON"])
        expectHeader("not json", ["not valid JSON"])
        expectHeader("[1, 2]", ["not a JSON object"])
        expectHeader("{\(entry(dtype: "F99"))}", ["unknown dtype 'F99' for tensor 'w'"])
        expectHeader(#"{"w": {"shape": [2], "data_offsets": [0, 8]}}"#, ["'w'", "dtype"])
        expectHeader(#"{"w": {"dtype": 3, "shape": [2], "data_offsets": [0, 8]}}"#, ["'w'", "dtype"])
        expectHeader(#"{"w": {"dtype": "F32", "data_offsets": [0, 8]}}"#, ["'w'", "shape"])
        expectHeader(#"{"w": {"dtype": "F32", "shape": [2]}}"#, ["'w'", "data_offsets"])
        expectHeader(#"{"w": [1]}"#, ["'w'", "not an object"])
        expectHeader("{\(entry(shape: "[2.5]"))}", ["'w'", "non-integer"])
        expectHeader("{\(entry(shape: "[\"2\"]"))}", ["'w'", "non-integer"])
        expectHeader("{\(entry(shape: "[-2]"))}", ["'w'", "negative dimension -2"])
        expectHeader("{\(entry(shape: "[4611686018427387904, 4]"))}", ["'w'", "overflows"])
        expectHeader("{\(entry(shape: "[4611686018427387904]"))}", ["'w'", "overflows"])
        expectHeader("{\(entry(offsets: "[8, 0]"))}", ["'w'", "data_offsets"])
        expectHeader("{\(entry(offsets: "[0]"))}", ["'w'", "data_offsets"])
        expectHeader("{\(entry(offsets: "[-8, 0]"))}", ["'w'", "data_offsets"])
        expectHeader("{\(entry(offsets: "[0, 8.5]"))}", ["'w'", "data_offsets"])
        expectHeader("{\(entry(shape: "[3]"))}", ["'w'", "does not match"])
        expectHeader("{\(entry(dtype: "F16", shape: "[2]"))}", ["'w'", "does not match", "F16"])
        expectHeader("{\(entry(offsets: "[0, 12]"))}", ["tensor 'w' data [0, 12) extends past end of data (size 8)"])
        // A truncated file: the header is intact but the data section is short.
        expectHeader("{\(entry(shape: "[4]", offsets: "[0, 16]"))}", data: [UInt8](repeating: 0, count: 10),
                     ["tensor 'w' data [0, 16) extends past end of data (size 10)"])
        expectHeader("{\(entry(name: "a", shape: "[2]", offsets: "[0, 8]")), \(entry(name: "b", shape: "[1]", offsets: "[4, 8]"))}",
                     ["tensors 'a' and 'b' overlap"])
        expectHeader("{\(entry(name: "a", shape: "[2]", offsets: "[0, 8]")), \(entry(name: "b", shape: "[2]", offsets: "[0, 8]"))}",
                     ["overlap"])
        expectHeader(#"{"__metadata__": {"format": 1}}"#, ["__metadata__", "format"])
        expectHeader(#"{"__metadata__": []}"#, ["__metadata__"])

        // Valid edge cases: empty header object, empty tensors sharing an offset, gaps.
        writeBytes(safetensorsBytes(header: "{}", data: []), to: path)
        XCTAssertEqual(try SafetensorsFile.open(path).tensorNames, [])
        writeBytes(safetensorsBytes(header: "{\(entry(name: "a", shape: "[0]", offsets: "[4, 4]")), \(entry(name: "b", shape: "[1]", offsets: "[0, 4]"))}  ",
                                    data: eight), to: path)
        XCTAssertEqual(try SafetensorsFile.open(path).tensorNames, ["a", "b"])

        // Missing file and directory: I/O errors naming the path.
        assertThrows(["cannot open", dir + "/missing"]) { try SafetensorsFile.open(dir + "/missing") }
        assertThrows(["directory"]) { try SafetensorsFile.open(dir) }
    }

    func testSafetensorsNeverCrashesOnMutatedFiles() throws {
        let dir = try makeTempDirectory(self)
        let good = dir + "/good.safetensors"
        try writeF32(good, [("a", [2, 2], [1, 2, 3, 4]), ("b", [3], [5, 6, 7])], metadata: ["format": "pt"])
        let original = try readFile(good)
        let path = dir + "/mutated.safetensors"
        func tryOpen(_ bytes: [UInt8]) {
            writeBytes(bytes, to: path)
            do {
                let file = try SafetensorsFile.open(path)
                for name in file.tensorNames { _ = try? file.floats(name) }
            } catch is DPOError {
            } catch {
                XCTFail("non-DPOError \(error)")
            }
        }
        // Every truncation.
        for length in 0..<original.count { tryOpen(Array(original[0..<length])) }
        // Every single-byte change in the length field and header.
        var rng = SystemRandomNumberGenerator()
        let headerEnd = 8 + original[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        for i in 0..<headerEnd {
            for value: UInt8 in [0, 0x22, 0x7B, 0x30, 0x39, 0xFF, UInt8.random(in: 0...255, using: &rng)] {
                var bytes = original
                bytes[i] = value
                tryOpen(bytes)
            }
        }
    }

    // MARK: - Checkpoints

    func testCheckpointSingleFile() throws {
        let dir = try makeTempDirectory(self)
        try writeF32(dir + "/model.safetensors", [("x", [2], [1, 2]), ("y", [1], [3])])
        let checkpoint = try SafetensorsCheckpoint.open(directory: dir + "/")
        XCTAssertEqual(checkpoint.tensorNames, ["x", "y"])
        XCTAssertEqual(checkpoint.info("y")?.shape, [1])
        var out = [Float](repeating: 0, count: 2)
        try out.withUnsafeMutableBufferPointer { try checkpoint.readFloats("x", into: $0) }
        XCTAssertEqual(out, [1, 2])
        assertThrows(["'nope'", dir]) { try checkpoint.floats("nope") }
    }

    func testCheckpointSharded() throws {
        let dir = try makeTempDirectory(self)
        try writeF32(dir + "/model-00001-of-00002.safetensors",
                     [("layers.0.w", [2, 2], [1, 2, 3, 4]), ("embed", [3], [5, 6, 7]), ("unmapped", [1], [0])])
        try writeF32(dir + "/model-00002-of-00002.safetensors", [("layers.1.w", [2], [8, 9])])
        let index = """
        {"metadata": {"total_size": 44},
         "weight_map": {"embed": "model-00001-of-00002.safetensors",
                        "layers.1.w": "model-00002-of-00002.safetensors",
                        "layers.0.w": "model-00001-of-00002.safetensors"}}
        """
        try writeFileAtomically(dir + "/model.safetensors.index.json", bytes: Array(index.utf8))
        let checkpoint = try SafetensorsCheckpoint.open(directory: dir)
        XCTAssertEqual(checkpoint.tensorNames, ["embed", "layers.1.w", "layers.0.w"])
        XCTAssertEqual(try checkpoint.floats("layers.0.w"), [1, 2, 3, 4])
        XCTAssertEqual(try checkpoint.floats("layers.1.w"), [8, 9])
        XCTAssertEqual(try checkpoint.floats("embed"), [5, 6, 7])
        XCTAssertEqual(checkpoint.info("layers.1.w")?.shape, [2])
        XCTAssertNil(checkpoint.info("unmapped"))
        var out = [Float](repeating: 0, count: 4)
        assertThrows(["no tensor 'missing'", dir]) {
            try out.withUnsafeMutableBufferPointer { try checkpoint.readFloats("missing", into: $0) }
        }

        func expectIndexError(_ index: String, _ words: [String], line: UInt = #line) throws {
            try writeFileAtomically(dir + "/model.safetensors.index.json", bytes: Array(index.utf8))
            assertThrows(words, line: line) { try SafetensorsCheckpoint.open(directory: dir) }
        }
        try expectIndexError(#"{"weight_map": {"ghost": "model-00002-of-00002.safetensors"}}"#,
                             ["'ghost'", "not in it"])
        try expectIndexError(#"{"weight_map": {"x": "../model-00002-of-00002.safetensors"}}"#, ["invalid shard file name"])
        try expectIndexError(#"{"weight_map": {"x": "sub/model.safetensors"}}"#, ["invalid shard file name"])
        try expectIndexError(#"{"weight_map": {"x": ".."}}"#, ["invalid shard file name"])
        try expectIndexError(#"{"weight_map": {"x": 3}}"#, ["'x'", "not a string"])
        try expectIndexError(#"{"metadata": {}}"#, ["weight_map"])
        try expectIndexError(#"{"weight_map": "#, ["model.safetensors.index.json", "at byte"])
        try expectIndexError(#"{"weight_map": {"x": "missing.safetensors"}}"#, ["missing.safetensors", "No such file"])
    }

    func testCheckpointMissingWeights() throws {
        let dir = try makeTempDirectory(self)
        assertThrows(["no model.safetensors or model.safetensors.index.json in \(dir)"]) {
            try SafetensorsCheckpoint.open(directory: dir)
        }
    }
}

// MARK: - Interoperability with files written by the Python safetensors library

final class IOTestsPythonInterop: XCTestCase {
    /// Tests/DPOTests/Fixtures, written by tools/make_fixtures.py with Python safetensors.
    private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path

    private func fixture(_ relative: String) throws -> String {
        let path = fixtures + "/" + relative
        guard fileExists(path) else { throw XCTSkip("fixture \(relative) not present") }
        return path
    }

    func testShardedAndSingleFileCheckpointsAgree() throws {
        let single = try SafetensorsCheckpoint.open(directory: try fixture("gqa_tied/model"))
        let sharded = try SafetensorsCheckpoint.open(directory: try fixture("gqa_tied/model_sharded"))
        XCTAssertFalse(single.tensorNames.isEmpty)
        XCTAssertEqual(Set(single.tensorNames), Set(sharded.tensorNames))
        for name in single.tensorNames {
            XCTAssertEqual(single.info(name)?.shape, sharded.info(name)?.shape, name)
            XCTAssertEqual(try single.floats(name).map(\.bitPattern), try sharded.floats(name).map(\.bitPattern), name)
        }
    }

    func testBF16CheckpointIsRoundedF32() throws {
        let f32 = try SafetensorsCheckpoint.open(directory: try fixture("gqa_tied/model"))
        let bf16 = try SafetensorsCheckpoint.open(directory: try fixture("gqa_tied/model_bf16"))
        XCTAssertEqual(Set(f32.tensorNames), Set(bf16.tensorNames))
        for name in f32.tensorNames {
            XCTAssertEqual(bf16.info(name)?.dtype, .BF16, name)
            // torch's float32 -> bfloat16 rounds to nearest, ties to even.
            let expected = try f32.floats(name).map { value -> UInt32 in
                let bits = value.bitPattern
                return (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000
            }
            XCTAssertEqual(try bf16.floats(name).map(\.bitPattern), expected, name)
        }
    }

    func testWriterReproducesPythonFilesByteForByte() throws {
        for relative in ["gqa_tied/expected.safetensors", "mha_untied_bias_llama3/expected.safetensors",
                         "gqa_tied/model/model.safetensors", "mha_untied_bias_llama3/model/model.safetensors"] {
            let original = try fixture(relative)
            let file = try SafetensorsFile.open(original)
            let arrays = try file.tensorNames.map { ($0, file.info($0)!.shape, try file.floats($0)) }
            let copy = NSTemporaryDirectory() + "dpo-io-fixture-" + UUID().uuidString
            defer { try? FileManager.default.removeItem(atPath: copy) }
            try writeF32Tensors(copy, arrays, metadata: file.metadata)
            XCTAssertEqual(try readFile(copy), try readFile(original), relative)
        }
    }

    func testConfigJSONRoundTrips() throws {
        for relative in ["gqa_tied/model/config.json", "mha_untied_bias_llama3/model/config.json",
                         "gqa_tied/batch.json", "gqa_tied/model_sharded/model.safetensors.index.json"] {
            let bytes = try readFile(try fixture(relative))
            let value = try JSON.parse(bytes)
            XCTAssertEqual(try JSON.parse(JSON.serialize(value)), value, relative)
            XCTAssertEqual(try JSON.parse(JSON.serialize(value, pretty: false)), value, relative)
        }
    }
}

/// `SafetensorsWriter.write` over arrays (keeps each array alive while its buffer is in use).
func writeF32Tensors(_ path: String, _ tensors: [(String, [Int], [Float])], metadata: [String: String]) throws {
    func recurse(_ i: Int, _ acc: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)]) throws {
        if i == tensors.count { return try SafetensorsWriter.write(path, tensors: acc, metadata: metadata) }
        try tensors[i].2.withUnsafeBufferPointer { buffer in
            try recurse(i + 1, acc + [(name: tensors[i].0, shape: tensors[i].1, data: buffer)])
        }
    }
    try recurse(0, [])
}
