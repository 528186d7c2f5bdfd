import Foundation
import XCTest
@testable import DPO

/// The row sources: streamed JSON Lines, JSON array files, rows from JSON text.
final class DatasetSourceTests: XCTestCase {
    func write(_ text: String, _ name: String = "data.jsonl") throws -> String {
        let path = try makeScratchDirectory() + "/" + name
        try writeFileAtomically(path, bytes: Array(text.utf8))
        return path
    }

    func drain(_ source: inout some DatasetRowSource) throws -> [DatasetRow] {
        var rows: [DatasetRow] = []
        while let r = try source.next() { rows.append(r) }
        return rows
    }

    /// Lines of every length around the read chunk (64 KiB) come back whole, numbered by line,
    /// blank lines skipped, "\r\n" and a BOM accepted, and a last line without "\n" read.
    func testJSONLStreamsLinesAcrossChunks() throws {
        var lines: [String] = []
        var expected: [(index: Int, line: Int, text: String)] = []
        for k in 0..<300 {
            if k % 7 == 3 { lines.append(k % 2 == 0 ? "" : "  \t") }
            let text = String(repeating: "é", count: (k * 997) % 9000) + "\(k)"
            lines.append("{\"text\": \"\(text)\", \"k\": \(k)}" + (k % 5 == 0 ? "\r" : ""))
            expected.append((expected.count, lines.count, text))
        }
        let path = try write("\u{FEFF}" + lines.joined(separator: "\n"))
        XCTAssertGreaterThan(lines.joined().utf8.count, 4 << 20 / 2)
        var source = try JSONLRows(path: path)
        let rows = try drain(&source)
        XCTAssertEqual(rows.count, expected.count)
        for (row, e) in zip(rows, expected) {
            XCTAssertEqual(row.location, RowLocation(index: e.index, file: path, line: e.line))
            XCTAssertEqual(row.columns["text"]?.string, e.text)
        }
        XCTAssertNil(try source.next(), "stays at the end")
    }

    func testJSONLErrorsNameFileAndLine() throws {
        let bad = try write("{\"a\": 1}\n\n{\"a\": \n")
        var source = try JSONLRows(path: bad)
        XCTAssertNotNil(try source.next())
        expectDPOError(["data.jsonl:3", "bad JSON"]) { _ = try source.next() }

        let notObject = try write("{\"a\": 1}\n[1, 2]\n")
        var s2 = try JSONLRows(path: notObject)
        _ = try s2.next()
        expectDPOError(["row 1", "data.jsonl:2", "must be a JSON object", "a list"]) { _ = try s2.next() }

        let long = try write("{\"a\": 1}\n{\"text\": \"" + String(repeating: "x", count: 5000) + "\"}\n")
        var s3 = try JSONLRows(path: long, maxLineBytes: 1000)
        _ = try s3.next()
        expectDPOError(["data.jsonl:2", "longer than 1000 bytes"]) { _ = try s3.next() }

        expectDPOError(["cannot open", "missing.jsonl"]) { _ = try JSONLRows(path: "/nonexistent/missing.jsonl") }
        expectDPOError(["not a regular file"]) { _ = try JSONLRows(path: "/dev/null") }
    }

    func testJSONArrayFilesAndDetection() throws {
        let array = try write("\u{FEFF}\n  [{\"prompt\": \"a\"}, {\"prompt\": \"b\"}]", "data.json")
        var source = try DatasetFile.open(path: array)
        XCTAssertTrue(source is JSONArrayRows)
        let rows = try drain(&source)
        XCTAssertEqual(rows.map { $0.columns["prompt"]?.string }, ["a", "b"])
        XCTAssertEqual(rows[1].location, RowLocation(index: 1, file: array))
        XCTAssertEqual(rows[1].location.description, "row 1 (\(array))")

        var lines = try DatasetFile.open(path: try write("{\"prompt\": \"a\"}\n"))
        XCTAssertTrue(lines is JSONLRows)
        XCTAssertEqual(try drain(&lines).count, 1)

        expectDPOError(["data.json", "expected a JSON array"]) { _ = try JSONArrayRows(path: try self.write("{\"a\": 1}", "data.json")) }
        var mixed = try JSONArrayRows(path: try write("[{\"a\": 1}, 3]", "data.json"))
        _ = try mixed.next()
        expectDPOError(["row 1", "must be a JSON object", "a number"]) { _ = try mixed.next() }
    }

    func testRowsFromJSONText() throws {
        let row = try DatasetRow(json: "{\"prompt\": \"hi\", \"chosen\": \" a\"}", index: 7)
        XCTAssertEqual(row.location.description, "row 7")
        XCTAssertEqual(row.columns["chosen"]?.string, " a")
        expectDPOError(["row 7", "bad JSON"]) { _ = try DatasetRow(json: "{\"prompt\": ", index: 7) }
        expectDPOError(["row 2", "must be a JSON object"]) { _ = try DatasetRow(json: "\"text\"", index: 2) }
        let chunk = try DatasetRow.rows(jsonArray: "[{\"text\": \"a\"}, {\"text\": \"b\"}]", firstIndex: 100)
        XCTAssertEqual(chunk.map(\.location.index), [100, 101])
        expectDPOError(["rows from 5", "JSON array"]) { _ = try DatasetRow.rows(jsonArray: "{}", firstIndex: 5) }
    }
}
