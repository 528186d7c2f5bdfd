import XCTest
@testable import DPO

/// The GGUF reader against files and values made by gguf-py (tools/make_gguf_fixtures.py):
/// dequantization bit for bit, metadata of every value type in v2 and v3, and the table of
/// corrupt files.
final class GGUFFixtureTests: XCTestCase {
    static var directory: String { TestModels.fixturesDirectory() + "/gguf" }

    // MARK: Dequantization

    func testEveryReadableTypeDequantizesBitIdenticallyToGGUFPy() throws {
        var checked: [String] = []
        for type in GGMLType.allCases where type.isReadableAsFloat {
            let base = "\(GGUFFixtureTests.directory)/quants/\(type.name)"
            let file = try GGUFFile.open(path: base + ".gguf")
            let info = try XCTUnwrap(file.tensor(named: "t"))
            XCTAssertEqual(info.type, type)
            XCTAssertEqual(info.shape.first, 2)
            let expectedBytes = try readFile(base + ".f32")
            let expected = expectedBytes.withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)) }
            let got = try file.floats("t").map(\.bitPattern)
            XCTAssertEqual(got.count, expected.count, type.name)
            let mismatches = zip(got, expected).enumerated().filter { $0.element.0 != $0.element.1 }
            XCTAssertTrue(mismatches.isEmpty, "\(type.name): \(mismatches.count) values differ, first at \(mismatches.first.map { "\($0.offset): \(Float(bitPattern: $0.element.0)) vs \(Float(bitPattern: $0.element.1))" } ?? "")")
            checked.append(type.name)
        }
        XCTAssertEqual(checked.sorted(), ["BF16", "F16", "F32", "Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0"])
    }

    func testReadFloatsChecksTheDestination() throws {
        let file = try GGUFFile.open(path: "\(GGUFFixtureTests.directory)/quants/Q4_K.gguf")
        var small = [Float](repeating: 0, count: 3)
        expectDPOError(["has 1024 elements", "destination holds 3"]) {
            try small.withUnsafeMutableBufferPointer { try file.readFloats("t", into: $0) }
        }
        expectDPOError(["no tensor named 'nope'"]) { _ = try file.floats("nope") }
    }

    // MARK: Metadata

    /// The JSON form the script writes, as a GGUFValue.
    func value(_ json: JSONObject) throws -> GGUFValue {
        let t = try XCTUnwrap(json["t"]?.string)
        let v = try XCTUnwrap(json["v"])
        func text() throws -> String { try XCTUnwrap(v.string) }
        switch t {
        case "UINT8": return .uint8(try XCTUnwrap(UInt8(text())))
        case "INT8": return .int8(try XCTUnwrap(Int8(text())))
        case "UINT16": return .uint16(try XCTUnwrap(UInt16(text())))
        case "INT16": return .int16(try XCTUnwrap(Int16(text())))
        case "UINT32": return .uint32(try XCTUnwrap(UInt32(text())))
        case "INT32": return .int32(try XCTUnwrap(Int32(text())))
        case "UINT64": return .uint64(try XCTUnwrap(UInt64(text())))
        case "INT64": return .int64(try XCTUnwrap(Int64(text())))
        case "FLOAT32": return .float32(Float(bitPattern: try XCTUnwrap(UInt32(text()))))
        case "FLOAT64": return .float64(Double(bitPattern: try XCTUnwrap(UInt64(text()))))
        case "BOOL": return .bool(try XCTUnwrap(v.bool))
        case "STRING": return .string(try text())
        case "ARRAY":
            let element = try XCTUnwrap(GGUFValueType.allNames[try XCTUnwrap(json["e"]?.string)])
            return .array(element, try XCTUnwrap(v.array).map { try value(try XCTUnwrap($0.object)) })
        default: throw DPOError.format("fixture: unknown type \(t)")
        }
    }

    func checkMetadataFixture(_ name: String) throws {
        let path = "\(GGUFFixtureTests.directory)/metadata/\(name).gguf"
        let expected = try XCTUnwrap(try JSON.parse(try readFile("\(GGUFFixtureTests.directory)/metadata/\(name).json")).object)
        let file = try GGUFFile.open(path: path)
        XCTAssertEqual(file.version, expected["version"]?.int)
        XCTAssertEqual(file.alignment, expected["alignment"]?.int)
        let entries = try XCTUnwrap(expected["metadata"]?.array).map { try XCTUnwrap($0.object) }
        XCTAssertEqual(file.metadata.keys, entries.map { $0["key"]!.string! })
        for entry in entries {
            let key = entry["key"]!.string!
            XCTAssertEqual(file.metadata[key], try value(entry), key)
        }
        let tensors = try XCTUnwrap(expected["tensors"]?.array).map { try XCTUnwrap($0.object) }
        XCTAssertEqual(file.tensors.map(\.name), tensors.map { $0["name"]!.string! })
        for (info, t) in zip(file.tensors, tensors) {
            XCTAssertEqual(info.dimensions, t["dims"]!.array!.map { $0.int! }, info.name)
            XCTAssertEqual(info.type.name, t["type"]!.string!, info.name)
            XCTAssertEqual(info.offset, t["offset"]!.int!, info.name)
            XCTAssertEqual(info.offset % file.alignment, file.dataStart % file.alignment)
            XCTAssertEqual(info.byteCount, t["bytes"]!.int!, info.name)
        }
        // The tensors read back: "a" is F32 [3, 5] row-major.
        XCTAssertEqual(try file.floats("a").count, 15)
        XCTAssertEqual(try file.floats("q").count, 128)
    }

    func testVersion3MetadataOfEveryTypeMatchesGGUFPy() throws { try checkMetadataFixture("v3") }
    func testVersion2MetadataWithEmptyArraysAndAlignment8() throws { try checkMetadataFixture("v2") }

    // MARK: Corrupt files

    func testEveryCorruptFileIsAnErrorNamingTheFile() throws {
        let dir = "\(GGUFFixtureTests.directory)/corrupt"
        let cases = try XCTUnwrap(try JSON.parse(try readFile(dir + "/expected.json")).array)
        XCTAssertGreaterThanOrEqual(cases.count, 20)
        for item in cases {
            let c = try XCTUnwrap(item.object)
            let name = c["file"]!.string!, stage = c["stage"]!.string!
            let path = dir + "/" + name
            let words = [path] + c["error"]!.array!.map { $0.string! }
            switch stage {
            case "open":
                expectDPOError(words) { _ = try GGUFFile.open(path: path) }
            case "read":
                let file = try GGUFFile.open(path: path)
                expectDPOError(words) { _ = try file.floats(c["tensor"]!.string!) }
            case "load":
                expectDPOError(words) { _ = try LlamaModel.load(ggufFile: path) }
            default:
                XCTFail("unknown stage \(stage)")
            }
            // Every file is refused by the model loader too (never a crash).
            expectDPOError([path]) { _ = try LlamaModel.load(path: path) }
        }
    }

    func testIsGGUFChecksTheMagicOnly() throws {
        XCTAssertTrue(GGUFFile.isGGUF(path: "\(GGUFFixtureTests.directory)/corrupt/truncated_header.gguf"))
        XCTAssertFalse(GGUFFile.isGGUF(path: "\(GGUFFixtureTests.directory)/corrupt/bad_magic.gguf"))
        XCTAssertFalse(GGUFFile.isGGUF(path: "\(GGUFFixtureTests.directory)/corrupt/empty.gguf"))
        XCTAssertFalse(GGUFFile.isGGUF(path: "\(GGUFFixtureTests.directory)/no-such-file.gguf"))
        XCTAssertFalse(GGUFFile.isGGUF(path: GGUFFixtureTests.directory))
    }
}
