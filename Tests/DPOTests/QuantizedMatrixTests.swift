import Foundation
import XCTest
@testable import DPO

/// QuantizedMatrix (Math/QuantizedMatrix.swift) and its GGUF loader (IO/GGUFQuantizedWeights.swift):
/// dequantization against gguf-py's values (the gguf quants fixtures), the tiled products against
/// sgemm on the fully dequantized fp32 matrix (bit for bit) and against a float64 product, for
/// every type, several shapes and tile sizes; the loader against `LlamaModel.load(ggufFile:)`.
final class QuantizedMatrixTests: XCTestCase {
    /// The fp16 scale fields of each block type (byte offsets in a block), as in
    /// tools/make_gguf_fixtures.py: filled with finite values so every element is finite.
    static let scaleFields: [GGMLType: [Int]] = [
        .Q4_0: [0], .Q4_1: [0, 2], .Q5_0: [0], .Q5_1: [0, 2], .Q8_0: [0],
        .Q2_K: [80, 82], .Q3_K: [108], .Q4_K: [0, 2], .Q5_K: [0, 2], .Q6_K: [208],
    ]

    static let allTypes = GGMLType.allCases.filter(\.isReadableAsFloat)

    /// A random [out, in] matrix of `type`: random quantized bytes with fp16 scales in
    /// (-1/16, 1/16); F32/F16/BF16 elements normal with sigma 1/4.
    static func randomMatrix(_ type: GGMLType, out: Int, in inF: Int, seed: UInt64) throws -> QuantizedMatrix {
        var rng = Xoshiro256(seed: seed)
        let count = out * inF
        var bytes: [UInt8]
        switch type {
        case .F32:
            bytes = (0..<count).flatMap { _ in withUnsafeBytes(of: Float(rng.nextNormal() / 4)) { Array($0) } }
        case .F16:
            bytes = (0..<count).flatMap { _ in withUnsafeBytes(of: Float16(Float(rng.nextNormal() / 4)).bitPattern) { Array($0) } }
        case .BF16:
            bytes = (0..<count).flatMap { _ in withUnsafeBytes(of: UInt16(Float(rng.nextNormal() / 4).bitPattern >> 16)) { Array($0) } }
        default:
            let blocks = count / type.blockSize, size = type.bytesPerBlock
            bytes = (0..<blocks * size).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            for b in 0..<blocks {
                for field in scaleFields[type]! {
                    let scale = Float16(Float(rng.nextUniform() - 0.5) / 8).bitPattern
                    bytes[b * size + field] = UInt8(scale & 0xFF)
                    bytes[b * size + field + 1] = UInt8(scale >> 8)
                }
            }
        }
        return try bytes.withUnsafeBytes { try QuantizedMatrix(type: type, outFeatures: out, inFeatures: inF, bytes: $0) }
    }

    /// The whole matrix dequantized with one `ggmlDequantize` call over all its bytes (the
    /// function `GGUFFile.readFloats` uses, checked against gguf-py in GGUFFixtureTests).
    static func reference(_ w: QuantizedMatrix) -> [Float] {
        var out = [Float](repeating: .nan, count: w.outFeatures * w.inFeatures)
        let blocks = w.outFeatures * w.inFeatures / w.type.blockSize
        w.withBytes { bytes in
            out.withUnsafeMutableBufferPointer { ggmlDequantize(w.type, bytes.baseAddress!, blocks: blocks, into: $0.baseAddress!) }
        }
        return out
    }

    static func randomFloats(_ n: Int, seed: UInt64) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in Float(rng.nextNormal()) }
    }

    static let defaultTile = QuantizedScratch.tileFloats

    override func tearDown() {
        QuantizedScratch.setTileFloats(QuantizedMatrixTests.defaultTile)
        super.tearDown()
    }

    // MARK: Dequantization

    func testDequantizationEqualsGGUFPyForEveryType() throws {
        for type in QuantizedMatrixTests.allTypes {
            let base = "\(TestModels.fixturesDirectory())/gguf/quants/\(type.name)"
            let file = try GGUFFile.open(path: base + ".gguf")
            let info = try XCTUnwrap(file.tensor(named: "t"))
            let w = try file.rawBytes("t").withUnsafeBytes {
                try QuantizedMatrix(type: type, outFeatures: info.shape[0], inFeatures: info.shape[1], bytes: $0)
            }
            let expected = try readFile(base + ".f32").withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)) }
            var got = [Float](repeating: .nan, count: w.outFeatures * w.inFeatures)
            try got.withUnsafeMutableBufferPointer { try w.dequantize(rows: 0..<w.outFeatures, into: $0) }
            XCTAssertEqual(got.map(\.bitPattern), expected, type.name)
            // Row 1 alone, and its second block column alone.
            var row = [Float](repeating: .nan, count: w.inFeatures)
            try row.withUnsafeMutableBufferPointer { try w.dequantize(rows: 1..<2, into: $0) }
            XCTAssertEqual(row.map(\.bitPattern), Array(expected[w.inFeatures...]), type.name)
            let bs = type.blockSize == 1 ? 32 : type.blockSize
            var part = [Float](repeating: .nan, count: bs)
            part.withUnsafeMutableBufferPointer {
                let blocks = type.blockSize == 1 ? 32..<64 : 1..<2
                w.dequantizeTile(rows: 1..<2, blocks: blocks, into: $0.baseAddress!, parallel: false)
            }
            XCTAssertEqual(part.map(\.bitPattern), Array(expected[w.inFeatures + bs..<w.inFeatures + 2 * bs]), type.name)
            XCTAssertEqual(w.byteCount, info.byteCount)
        }
    }

    /// The SIMD tile kernels (Q4_0, Q4_1, Q8_0, Q6_K) against the scalar ones, on blocks of random
    /// bytes: every fp16 scale (subnormal, infinite and NaN ones too), every quant.
    func testSIMDKernelsEqualTheScalarKernels() {
        var rng = Xoshiro256(seed: 42)
        for type in [GGMLType.Q4_0, .Q4_1, .Q8_0, .Q6_K] {
            let count = 4099
            let bytes = (0..<count * type.bytesPerBlock).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var scalar = [Float](repeating: 1, count: count * type.blockSize), simd = [Float](repeating: 2, count: scalar.count)
            bytes.withUnsafeBytes { src in
                ggmlDequantize(type, src.baseAddress!, blocks: count, into: &scalar)
                simd.withUnsafeMutableBufferPointer { dst in
                    // From block 1 on in one call (unaligned source and destination), then block 0.
                    dequantizeBlocks(type, src.baseAddress! + type.bytesPerBlock, blocks: count - 1,
                                     into: dst.baseAddress! + type.blockSize)
                    dequantizeBlocks(type, src.baseAddress!, blocks: 1, into: dst.baseAddress!)
                }
            }
            XCTAssertEqual(scalar.map(\.bitPattern), simd.map(\.bitPattern), type.name)
        }
    }

    // MARK: Products

    /// (T, out, in) shapes: a single token, edge tiles, a tall product, a SmolLM2 matrix.
    static func shapes(_ type: GGMLType) -> [(Int, Int, Int)] {
        type.blockSize == 256
            ? [(1, 70, 512), (37, 33, 256), (130, 41, 768), (20, 300, 1024)]
            : [(1, 70, 96), (37, 131, 160), (300, 40, 64), (9, 576, 576), (64, 200, 1536)]
    }

    /// Forward and input gradient, overwrite and accumulate: bit-identical to the tiled fp32
    /// products on the dequantized matrix; against sgemm (bf16gemm with `bf16`) on the dequantized
    /// matrix and against the float64 product of the same (bf16-rounded with `bf16`) operands,
    /// every element within 1e-6 * (|C0| + sum_k |A_ik| |B_kj|) of both.
    /// Returns the fraction of elements bit-identical to sgemm's.
    @discardableResult
    func checkProducts(_ w: QuantizedMatrix, tokens T: Int, bf16: Bool, label: String,
                       file: StaticString = #filePath, line: UInt = #line) -> Double {
        let (out, inF) = (w.outFeatures, w.inFeatures)
        let dense = QuantizedMatrixTests.reference(w)
        let x = QuantizedMatrixTests.randomFloats(T * inF, seed: 11), dy = QuantizedMatrixTests.randomFloats(T * out, seed: 12)
        let y0 = QuantizedMatrixTests.randomFloats(T * out, seed: 13), dx0 = QuantizedMatrixTests.randomFloats(T * inF, seed: 14)
        var identical = 0, total = 0
        for accumulate in [false, true] {
            var y = y0, yRef = y0, dx = dx0, dxRef = dx0
            let beta: Float = accumulate ? 1 : 0
            w.forward(x, tokens: T, into: &y, accumulate: accumulate, bf16: bf16)
            gemm(bf16: bf16, transB: true, m: T, n: out, k: inF, a: x, lda: inF, b: dense, ldb: inF,
                 beta: beta, c: &yRef, ldc: out)
            w.inputGradient(dy, tokens: T, into: &dx, accumulate: accumulate, bf16: bf16)
            gemm(bf16: bf16, m: T, n: inF, k: out, a: dy, lda: out, b: dense, ldb: inF, beta: beta, c: &dxRef, ldc: inF)
            let what = "\(label) T=\(T) [\(out), \(inF)] accumulate=\(accumulate) bf16=\(bf16)"
            // The same tiles on the fp32 values: the same bits.
            var yTiled = y0, dxTiled = dx0
            QuantizedMatrix.forward(x, tokens: T, weight: dense, outFeatures: out, inFeatures: inF, into: &yTiled,
                                    accumulate: accumulate, bf16: bf16)
            QuantizedMatrix.inputGradient(dy, tokens: T, weight: dense, outFeatures: out, inFeatures: inF, into: &dxTiled,
                                          accumulate: accumulate, bf16: bf16)
            expectIdentical(y, yTiled, "forward against the tiled fp32 product, " + what, file: file, line: line)
            expectIdentical(dx, dxTiled, "input gradient against the tiled fp32 product, " + what, file: file, line: line)
            let round: (Float) -> Float = bf16 ? bf16Round : { $0 }
            let (xr, dyr, wr) = (x.map(round), dy.map(round), dense.map(round))
            expectClose(y, yRef, a: xr, b: wr, c0: accumulate ? y0 : nil, m: T, n: out, k: inF, transB: true,
                        "forward " + what, file: file, line: line)
            expectClose(dx, dxRef, a: dyr, b: wr, c0: accumulate ? dx0 : nil, m: T, n: inF, k: out, transB: false,
                        "input gradient " + what, file: file, line: line)
            identical += zip(y, yRef).filter { $0.0.bitPattern == $0.1.bitPattern }.count
            identical += zip(dx, dxRef).filter { $0.0.bitPattern == $0.1.bitPattern }.count
            total += y.count + dx.count
        }
        return total == 0 ? 1 : Double(identical) / Double(total)
    }

    func expectIdentical(_ got: [Float], _ want: [Float], _ what: String, file: StaticString, line: UInt) {
        let bad = zip(got, want).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        XCTAssertTrue(bad.isEmpty, "\(what): \(bad.count) of \(got.count) differ, first at \(bad.first.map { "\($0.offset): \($0.element.0) vs \($0.element.1)" } ?? "")", file: file, line: line)
    }

    /// For C = A op(B) (+ c0), A [m, k], op(B) [k, n] (B stored [n, k] when `transB`): every
    /// element of `got` within 1e-6 * (|c0| + sum_k |A_ik| |B_kj|) of `sgemm` (the product with the
    /// dequantized matrix) and of the float64 sum.
    func expectClose(_ got: [Float], _ sgemm: [Float], a: [Float], b: [Float], c0: [Float]?, m: Int, n: Int, k: Int,
                     transB: Bool, _ what: String, file: StaticString, line: UInt) {
        var worstSgemm = 0.0, worstExact = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var s = Double(c0?[i * n + j] ?? 0), scale = abs(s)
                for p in 0..<k {
                    let term = Double(a[i * k + p]) * Double(transB ? b[j * k + p] : b[p * n + j])
                    s += term
                    scale += abs(term)
                }
                let g = Double(got[i * n + j])
                worstSgemm = max(worstSgemm, abs(g - Double(sgemm[i * n + j])) / (scale + 1e-30))
                worstExact = max(worstExact, abs(g - s) / (scale + 1e-30))
            }
        }
        XCTAssertLessThanOrEqual(worstSgemm, 1e-6, "\(what): against sgemm on the dequantized matrix", file: file, line: line)
        XCTAssertLessThanOrEqual(worstExact, 1e-6, "\(what): against the float64 product", file: file, line: line)
    }

    func testProductsMatchSgemmOnTheDequantizedMatrixForEveryType() throws {
        var seed: UInt64 = 100
        var report: [String] = []
        for type in QuantizedMatrixTests.allTypes {
            var fractions: [Double] = []
            for (T, out, inF) in QuantizedMatrixTests.shapes(type) {
                seed += 1
                let w = try QuantizedMatrixTests.randomMatrix(type, out: out, in: inF, seed: seed)
                for tile in [QuantizedMatrixTests.defaultTile, 1] {
                    // Tile 1: the smallest tiles (64 rows, 256 columns), the last one partial.
                    QuantizedScratch.setTileFloats(tile)
                    fractions.append(checkProducts(w, tokens: T, bf16: false, label: "\(type.name) tile \(tile)"))
                }
            }
            report.append("\(type.name) \(Int(100 * fractions.reduce(0, +) / Double(fractions.count)))%")
        }
        print("elements bit-identical to sgemm on the dequantized matrix: " + report.joined(separator: ", "))
    }

    func testBF16ProductsEqualBF16GemmOnTheDequantizedMatrix() throws {
        for type in [GGMLType.Q4_1, .Q8_0, .F32, .Q6_K] {
            for (T, out, inF) in QuantizedMatrixTests.shapes(type) {
                let w = try QuantizedMatrixTests.randomMatrix(type, out: out, in: inF, seed: UInt64(out * inF))
                for tile in [QuantizedMatrixTests.defaultTile, 1] {
                    QuantizedScratch.setTileFloats(tile)
                    checkProducts(w, tokens: T, bf16: true, label: "\(type.name) tile \(tile) native=\(BF16Gemm.usesNativeKernel)")
                    BF16GemmTests.withFallbackForced {
                        checkProducts(w, tokens: T, bf16: true, label: "\(type.name) tile \(tile) fallback")
                    }
                }
            }
        }
    }

    func testEmptyProducts() throws {
        // No output features: the input gradient is zero (or dX unchanged); no tokens: nothing.
        let w = try QuantizedMatrixTests.randomMatrix(.Q4_1, out: 0, in: 64, seed: 1)
        var dx = [Float](repeating: 3, count: 2 * 64), y: [Float] = []
        w.inputGradient([], tokens: 2, into: &dx, accumulate: true)
        XCTAssertEqual(dx, [Float](repeating: 3, count: 128))
        w.inputGradient([], tokens: 2, into: &dx)
        XCTAssertEqual(dx, [Float](repeating: 0, count: 128))
        w.forward(QuantizedMatrixTests.randomFloats(128, seed: 2), tokens: 2, into: &y)
        // No input features: Y = 0, or unchanged.
        let u = try QuantizedMatrixTests.randomMatrix(.Q4_1, out: 3, in: 0, seed: 1)
        var y3 = [Float](repeating: 3, count: 6)
        for bf16 in [false, true] {
            u.forward([], tokens: 2, into: &y3, accumulate: true, bf16: bf16)
            XCTAssertEqual(y3, [Float](repeating: 3, count: 6))
        }
        u.forward([], tokens: 2, into: &y3, bf16: true)
        XCTAssertEqual(y3, [Float](repeating: 0, count: 6))
        let v = try QuantizedMatrixTests.randomMatrix(.Q8_0, out: 5, in: 32, seed: 1)
        var untouched: [Float] = [7]
        v.forward([], tokens: 0, into: &untouched)
        v.inputGradient([], tokens: 0, into: &untouched)
        XCTAssertEqual(untouched, [7])
    }

    func testConcurrentProductsAgree() throws {
        let w = try QuantizedMatrixTests.randomMatrix(.Q4_1, out: 192, in: 576, seed: 5)
        let x = QuantizedMatrixTests.randomFloats(16 * 576, seed: 6)
        var expected = [Float](repeating: 0, count: 16 * 192)
        w.forward(x, tokens: 16, into: &expected)
        let results = UnsafeMutableBufferPointer<Float>.allocate(capacity: 4 * 16 * 192)
        defer { results.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            x.withUnsafeBufferPointer { w.forward($0.baseAddress!, tokens: 16, into: results.baseAddress! + i * 16 * 192) }
        }
        for i in 0..<4 { XCTAssertEqual(Array(results[i * 16 * 192..<(i + 1) * 16 * 192]), expected) }
    }

    // MARK: Bad input

    func testBadShapesAndTypesAreErrors() throws {
        let bytes = [UInt8](repeating: 0, count: 40)
        func make(_ type: GGMLType, _ out: Int, _ inF: Int, _ b: [UInt8] = bytes) throws {
            _ = try b.withUnsafeBytes { try QuantizedMatrix(type: type, outFeatures: out, inFeatures: inF, bytes: $0, what: "m") }
        }
        try make(.Q4_1, 2, 32)
        expectDPOError(["m:", "IQ2_XXS", "cannot be dequantized"]) { try make(.IQ2_XXS, 1, 256) }
        expectDPOError(["m:", "48 columns", "block size 32"]) { try make(.Q4_1, 1, 48) }
        expectDPOError(["m:", "has 60 bytes, got 40"]) { try make(.Q4_1, 3, 32) }
        expectDPOError(["m:", "negative"]) { try make(.Q4_1, -1, 32) }
        expectDPOError(["m:", "overflows"]) { try make(.F32, Int.max / 2, 4) }
        let w = try bytes.withUnsafeBytes { try QuantizedMatrix(type: .Q4_1, outFeatures: 2, inFeatures: 32, bytes: $0) }
        var buffer = [Float](repeating: 0, count: 64)
        expectDPOError(["rows 1..<3", "outside the 2 rows"]) {
            try buffer.withUnsafeMutableBufferPointer { try w.dequantize(rows: 1..<3, into: $0) }
        }
        expectDPOError(["need 32 floats", "holds 64"]) {
            try buffer.withUnsafeMutableBufferPointer { try w.dequantize(rows: 0..<1, into: $0) }
        }
    }

    // MARK: Loading from GGUF

    /// Every linear weight of `path`, dequantized, equals the parameter LlamaModel.load(ggufFile:)
    /// reads (q/k rows un-permuted for llama); returns the matrices and the fp32 model.
    @discardableResult
    func checkLoader(_ path: String, layers: Int) throws -> ([String: QuantizedMatrix], LlamaModel) {
        let weights = try QuantizedMatrix.linearWeights(ggufFile: path)
        let model = try LlamaModel.load(ggufFile: path)
        XCTAssertEqual(Set(weights.keys), Set((0..<layers).flatMap { l in QuantizedMatrix.layerLinearNames.map { "model.layers.\(l).\($0)" } }))
        for (name, w) in weights {
            let p = try XCTUnwrap(model.parameter(name), name)
            var got = [Float](repeating: .nan, count: p.count)
            try got.withUnsafeMutableBufferPointer { try w.dequantize(rows: 0..<w.outFeatures, into: $0) }
            XCTAssertEqual(got.map(\.bitPattern), Array(p).map(\.bitPattern), name)
        }
        return (weights, model)
    }

    func testLoaderMatchesTheFP32ModelOnTheFixtureModels() throws {
        let dir = TestModels.fixturesDirectory() + "/gguf/models"
        let (q8, _) = try checkLoader(dir + "/llama_gqa_q8.gguf", layers: 2)
        XCTAssertEqual(q8["model.layers.0.self_attn.q_proj.weight"]?.type, .Q8_0)
        try checkLoader(dir + "/llama_gqa_untied.gguf", layers: 2)
        try checkLoader(dir + "/qwen2_tied_bias.gguf", layers: 2)
        // One matrix by name; the embedding too; a vector or unknown name is refused.
        let file = try GGUFFile.open(path: dir + "/llama_gqa_q8.gguf")
        let k = try QuantizedMatrix.load("model.layers.1.self_attn.k_proj.weight", from: file)
        XCTAssertEqual(k.byteCount, q8["model.layers.1.self_attn.k_proj.weight"]?.byteCount)
        let embed = try QuantizedMatrix.load("model.embed_tokens.weight", from: file)
        let model = try LlamaModel.load(ggufFile: dir + "/llama_gqa_q8.gguf")
        var row = [Float](repeating: 0, count: embed.inFeatures)
        try row.withUnsafeMutableBufferPointer { try embed.dequantize(rows: 3..<4, into: $0) }
        XCTAssertEqual(row, Array(model.parameter("model.embed_tokens.weight")![3 * embed.inFeatures..<4 * embed.inFeatures]))
        expectDPOError(["llama_gqa_q8.gguf", "'model.norm.weight' is not a matrix"]) {
            _ = try QuantizedMatrix.load("model.norm.weight", from: file)
        }
        expectDPOError(["'nope' is not a matrix"]) { _ = try QuantizedMatrix.load("nope", from: file) }
    }

    func testLoaderRefusesFilesItCannotRead() throws {
        let quants = TestModels.fixturesDirectory() + "/gguf/quants/Q4_0.gguf"
        expectDPOError(["Q4_0.gguf"]) { _ = try QuantizedMatrix.linearWeights(ggufFile: quants) }
        expectDPOError(["/nonexistent.gguf"]) { _ = try QuantizedMatrix.linearWeights(ggufFile: "/nonexistent.gguf") }
        // The corrupt GGUF files: the errors the reader and the model loader give.
        let dir = TestModels.fixturesDirectory() + "/gguf/corrupt"
        let cases = try XCTUnwrap(try JSON.parse(try readFile(dir + "/expected.json")).array)
        for item in cases {
            let c = try XCTUnwrap(item.object)
            let path = dir + "/" + c["file"]!.string!
            let stage = c["stage"]!.string!
            let words = [path] + (stage == "read" ? [] : c["error"]!.array!.map { $0.string! })
            expectDPOError(words) { _ = try QuantizedMatrix.linearWeights(ggufFile: path) }
        }
    }

    /// The tiny Q8_0 llama fixture with one tensor's header entry patched.
    func patchedModel(_ tensor: String, _ patch: (inout [UInt8], Int) -> Void) throws -> String {
        var bytes = try readFile(TestModels.fixturesDirectory() + "/gguf/models/llama_gqa_q8.gguf")
        let name = Array(tensor.utf8)
        let at = try XCTUnwrap((0...bytes.count - name.count).first { bytes[$0..<$0 + name.count].elementsEqual(name) })
        patch(&bytes, at + name.count)  // n_dims u32, ne u64 x n_dims, type u32, offset u64
        let path = try makeScratchDirectory() + "/patched.gguf"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func testLoaderRefusesMisshapenMissingOrUnreadableTensors() throws {
        // A q_proj with half its rows.
        let short = try patchedModel("blk.0.attn_q.weight") { b, at in b[at + 12] /= 2 }
        expectDPOError(["patched.gguf", "'blk.0.attn_q.weight'", "has shape [16, 32]", "implies [32, 32]"]) {
            _ = try QuantizedMatrix.linearWeights(ggufFile: short)
        }
        // A down_proj of type I8 (fewer bytes, so the file stays valid).
        let i8 = try patchedModel("blk.1.ffn_down.weight") { b, at in
            b[at + 20] = 24; b[at + 21] = 0; b[at + 22] = 0; b[at + 23] = 0
        }
        expectDPOError(["patched.gguf", "'blk.1.ffn_down.weight'", "I8", "cannot dequantize"]) {
            _ = try QuantizedMatrix.linearWeights(ggufFile: i8)
        }
        // v_proj renamed.
        let renamed = try patchedModel("blk.1.attn_v.weight") { b, at in b[at - 8] = UInt8(ascii: "x") }
        expectDPOError(["patched.gguf", "'blk.1.attn_v.weight'", "is missing"]) {
            _ = try QuantizedMatrix.linearWeights(ggufFile: renamed)
        }
    }

    /// The q/k row map is the inverse of the permutation llama.cpp's converter applies.
    func testGGUFRowMapUndoesThePermutation() {
        let (heads, hd, columns) = (3, 8, 2)
        let hf = (0..<heads * hd * columns).map(Float.init)
        var gguf = [Float](repeating: 0, count: hf.count)
        ggufPermuteRows(hf, &gguf, heads: heads, headDim: hd, columns: columns, toGGUF: true)
        for r in 0..<heads * hd {
            let g = ggufRow(ofHFRow: r, headDim: hd)
            XCTAssertEqual(Array(gguf[g * columns..<(g + 1) * columns]), Array(hf[r * columns..<(r + 1) * columns]), "row \(r)")
        }
    }

    /// The resident memory of this process (/proc/self/statm), in bytes.
    static func residentBytes() throws -> Int {
        let fields = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8).split(separator: " ")
        return try XCTUnwrap(Int(fields[1])) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// SmolLM2-135M-Instruct Q4_1: all 210 linear weights load, take 6.4x less memory than fp32
    /// (resident memory grows by their quantized bytes), equal the fp32 model's parameters, and
    /// their products equal the tiled fp32 products with those parameters bit for bit; the tied
    /// Q8_0 embedding loads too.
    func testSmolLM2LinearWeights() throws {
        let path = try TestModels.smolLM2GGUF()
        let before = try QuantizedMatrixTests.residentBytes()
        var held: [String: QuantizedMatrix]? = try QuantizedMatrix.linearWeights(ggufFile: path)
        let grown = try QuantizedMatrixTests.residentBytes() - before
        let quantized = held!.values.reduce(0) { $0 + $1.byteCount }
        let fp32 = held!.values.reduce(0) { $0 + $1.fp32ByteCount }
        print("SmolLM2 linear weights: \(quantized) bytes quantized (Q4_1), \(fp32) bytes as fp32, ratio \(Double(fp32) / Double(quantized)); resident memory grew by \(grown) bytes loading them")
        XCTAssertEqual(quantized * 32 / 5, fp32)  // 20 bytes per 32 weights vs 128
        XCTAssertLessThan(grown, quantized + quantized / 8 + (8 << 20))
        held = nil

        let (weights, model) = try checkLoader(path, layers: 30)
        XCTAssertEqual(weights.count, 210)
        XCTAssertTrue(weights.values.allSatisfy { $0.type == .Q4_1 })
        for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.29.mlp.down_proj.weight"] {
            checkProducts(try XCTUnwrap(weights[name]), tokens: 7, bf16: false, label: name)
        }
        // Every matrix against the fp32 model's parameter (q/k rows un-permuted by the model loader).
        let T = 3
        for (name, w) in weights.sorted(by: { $0.key < $1.key }) {
            let p = try XCTUnwrap(model.parameter(name)).baseAddress!
            let (out, inF) = (w.outFeatures, w.inFeatures)
            let x = QuantizedMatrixTests.randomFloats(T * inF, seed: 21), dy = QuantizedMatrixTests.randomFloats(T * out, seed: 22)
            var y = [Float](repeating: 0, count: T * out), yRef = y, dx = [Float](repeating: 0, count: T * inF), dxRef = dx
            w.forward(x, tokens: T, into: &y)
            QuantizedMatrix.forward(x, tokens: T, weight: p, outFeatures: out, inFeatures: inF, into: &yRef)
            w.inputGradient(dy, tokens: T, into: &dx)
            QuantizedMatrix.inputGradient(dy, tokens: T, weight: p, outFeatures: out, inFeatures: inF, into: &dxRef)
            expectIdentical(y, yRef, "forward \(name)", file: #filePath, line: #line)
            expectIdentical(dx, dxRef, "input gradient \(name)", file: #filePath, line: #line)
        }
        // The tied embedding / LM head, Q8_0.
        let embed = try QuantizedMatrix.load("model.embed_tokens.weight", from: try GGUFFile.open(path: path))
        print("SmolLM2 embedding (tied LM head): \(embed.byteCount) bytes \(embed.type.name), \(embed.fp32ByteCount) bytes as fp32")
        XCTAssertEqual(embed.type, .Q8_0)
        var row = [Float](repeating: 0, count: 2 * embed.inFeatures)
        try row.withUnsafeMutableBufferPointer { try embed.dequantize(rows: 1234..<1236, into: $0) }
        let table = try XCTUnwrap(model.parameter("model.embed_tokens.weight"))
        XCTAssertEqual(row, Array(table[1234 * embed.inFeatures..<1236 * embed.inFeatures]))
    }

    // MARK: Benchmark

    /// With DPO_QGEMM_BENCH=1: GFLOP/s of the tiled products on SmolLM2's Q4_1 matrices (T = 512)
    /// against one sgemm on the dequantized fp32 matrix and against the tiled fp32 products.
    /// DPO_QGEMM_TILE sets the tile size in floats, DPO_QGEMM_T the tokens, DPO_QGEMM_BF16=1 the
    /// bf16 products (against bf16gemm), DPO_QGEMM_HEAD=1 adds the tied LM head (Q8_0).
    func testBenchmark() throws {
        let env = ProcessInfo.processInfo.environment
        guard env["DPO_QGEMM_BENCH"] == "1" else { throw XCTSkip("set DPO_QGEMM_BENCH=1 to run the benchmark") }
        Threads.setCount(Threads.count)  // as the CLI and the bindings do at start-up
        if let tile = env["DPO_QGEMM_TILE"].flatMap(Int.init) { QuantizedScratch.setTileFloats(tile) }
        let T = env["DPO_QGEMM_T"].flatMap(Int.init) ?? 512
        let bf16 = env["DPO_QGEMM_BF16"] == "1"
        let file = try GGUFFile.open(path: try TestModels.smolLM2GGUF())
        var lines = ["T=\(T) tile=\(QuantizedScratch.tileFloats) floats threads=\(Threads.count)"
                     + (bf16 ? " bf16 (native kernel: \(BF16Gemm.usesNativeKernel))" : "")]
        var names = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "mlp.gate_proj.weight", "mlp.down_proj.weight"]
            .map { "model.layers.0." + $0 }
        if env["DPO_QGEMM_HEAD"] == "1" { names.append("model.embed_tokens.weight") }  // the tied LM head, Q8_0
        for name in names {
            let w = try QuantizedMatrix.load(name, from: file)
            let (out, inF) = (w.outFeatures, w.inFeatures)
            let dense = QuantizedMatrixTests.reference(w)
            let x = QuantizedMatrixTests.randomFloats(T * inF, seed: 1), dy = QuantizedMatrixTests.randomFloats(T * out, seed: 2)
            var y = [Float](repeating: 0, count: T * out), dx = [Float](repeating: 0, count: T * inF)
            let flops = 2 * Double(T) * Double(out) * Double(inF)
            /// The best of 15 rounds (after one to warm up) of each body, the bodies interleaved so that they see the
            /// same load (the machine is shared).
            func times(_ bodies: [() -> Void]) -> [Double] {
                var best = [Double](repeating: .infinity, count: bodies.count)
                for round in 0..<16 {
                    for (i, body) in bodies.enumerated() {
                        let t0 = GemmCounter.now()
                        body()
                        if round > 0 { best[i] = min(best[i], GemmCounter.now() - t0) }
                    }
                }
                return best
            }
            func time(_ body: () -> Void) -> Double { withoutActuallyEscaping(body) { times([$0])[0] } }
            let t = times([
                { w.forward(x, tokens: T, into: &y, bf16: bf16) },
                { gemm(bf16: bf16, transB: true, m: T, n: out, k: inF, a: x, lda: inF, b: dense, ldb: inF, c: &y, ldc: out) },
                { QuantizedMatrix.forward(x, tokens: T, weight: dense, outFeatures: out, inFeatures: inF, into: &y, bf16: bf16) },
                { w.inputGradient(dy, tokens: T, into: &dx, bf16: bf16) },
                { gemm(bf16: bf16, m: T, n: inF, k: out, a: dy, lda: out, b: dense, ldb: inF, c: &dx, ldc: inF) },
                { QuantizedMatrix.inputGradient(dy, tokens: T, weight: dense, outFeatures: out, inFeatures: inF, into: &dx, bf16: bf16) },
            ])
            let (qf, sf, tf, qb, sb, tb) = (t[0], t[1], t[2], t[3], t[4], t[5])
            var full = [Float](repeating: 0, count: out * inF)
            let dq = time { full.withUnsafeMutableBufferPointer { w.dequantizeTile(rows: 0..<out, blocks: 0..<inF / w.type.blockSize, into: $0.baseAddress!, parallel: true) } }
            let dq1 = time { full.withUnsafeMutableBufferPointer { w.dequantizeTile(rows: 0..<out, blocks: 0..<inF / w.type.blockSize, into: $0.baseAddress!, parallel: false) } }
            func f(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }
            func g(_ s: Double) -> String { f(flops / s * 1e-9) }
            lines.append("[\(out) x \(inF)] \(w.type.name) forward \(g(qf)) GFLOP/s (sgemm \(g(sf)), fp32 tiles \(g(tf))) x\(f(qf / sf, 2))"
                         + " | input grad \(g(qb)) (sgemm \(g(sb)), fp32 tiles \(g(tb))) x\(f(qb / sb, 2)) | full dequant \(f(dq * 1e3, 3)) ms (one thread \(f(dq1 * 1e3, 3)))")
        }
        // Tile dequantization rate of every type, one thread, a [1024, 4096] matrix in 256 x 4096 tiles.
        var rates: [String] = []
        var tile = [Float](repeating: 0, count: 256 * 4096)
        for type in QuantizedMatrixTests.allTypes {
            let w = try QuantizedMatrixTests.randomMatrix(type, out: 1024, in: 4096, seed: 3)
            let blocks = 0..<4096 / type.blockSize
            var best = Double.infinity
            for _ in 0..<5 {
                let t0 = GemmCounter.now()
                tile.withUnsafeMutableBufferPointer { t in
                    for r0 in stride(from: 0, to: 1024, by: 256) {
                        w.dequantizeTile(rows: r0..<r0 + 256, blocks: blocks, into: t.baseAddress!, parallel: false)
                    }
                }
                best = min(best, GemmCounter.now() - t0)
            }
            rates.append("\(type.name) \(String(format: "%.2f", 4096 * 1024 / best * 1e-9))")
        }
        lines.append("tile dequantization, G floats/s on one thread: " + rates.joined(separator: ", "))
        print(lines.joined(separator: "\n"))
    }
}
