import Foundation
import XCTest
@testable import DPO

/// The bf16 products (Sources/DPO/Math/BF16Gemm.swift, Sources/CBF16): rounding against PyTorch,
/// and both implementations (the AVX512-BF16 kernel where the CPU has it, the fallback forced
/// with DPO_BF16_FALLBACK=1) against products of the bf16-rounded inputs computed in Double.
///
/// Two kinds of data:
/// - exact: every input is q (1 + r) with q a multiple of 1/8 in [-1, 1] and |r| < 2^-10, so
///   it rounds to exactly q in bf16 (the perturbation is below half a bf16 ulp of q), while the
///   unrounded input would give a different product. Products of such q are multiples of 2^-6 of
///   magnitude <= 1, and any sum of up to 2^17 of them (plus alpha, beta in powers of two and C in
///   multiples of 2^-6) is exact in fp32: the result must equal the reference bit for bit in
///   any summation order. This checks the rounding, the packing (every element's position) and
///   the edge handling exactly.
/// - general: uniform inputs in [-1, 1) with full float mantissas. fp32 accumulation of k exact
///   products (a bf16 x bf16 product is exact in fp32), alpha and beta C differs from the exact
///   value by at most gamma(k + 3) (|alpha| sum |a b| + |beta c|), gamma(n) = n u / (1 - n u),
///   u = 2^-24, in any summation order (Higham, Accuracy and Stability, 3.1): that is the
///   tolerance against the Double reference, twice it between the two implementations. It is far
///   below bf16's own rounding (2^-9 per input) for small k.
final class BF16GemmTests: XCTestCase {
    struct Product: CustomStringConvertible {
        var transA = false, transB = false
        var m: Int, n: Int, k: Int
        var alpha: Float = 1, beta: Float = 0
        /// Extra row-stride padding of the stored A, B, C (views into wider matrices).
        var pad = 0
        var lda: Int { (transA ? m : k) + pad }
        var ldb: Int { (transB ? k : n) + pad }
        var ldc: Int { n + pad }
        var aCount: Int { max(1, (transA ? k : m) * lda) }
        var bCount: Int { max(1, (transB ? n : k) * ldb) }
        var description: String {
            "\(transA ? "T" : "N")\(transB ? "T" : "N") m \(m) n \(n) k \(k) alpha \(alpha) beta \(beta) pad \(pad)"
        }
        func a(_ a: [Float], _ i: Int, _ p: Int) -> Float { transA ? a[p * lda + i] : a[i * lda + p] }
        func b(_ b: [Float], _ p: Int, _ j: Int) -> Float { transB ? b[j * ldb + p] : b[p * ldb + j] }
    }

    enum Path { case parallel, callingThread }

    // MARK: data

    /// q (1 + r): rounds to q in bf16 (see the class comment); q = 0 stays 0.
    static func exactValue(_ rng: inout Xoshiro256) -> Float {
        let q = Float(Int(rng.next() % 17) - 8) / 8
        let r = Float(rng.nextUniform() * 2 - 1) * 0x1p-10
        return q * (1 + r)
    }

    static func operands(_ p: Product, exact: Bool, seed: UInt64) -> (a: [Float], b: [Float], c: [Float]) {
        var rng = Xoshiro256(seed: seed)
        func value() -> Float { exact ? exactValue(&rng) : Float(rng.nextUniform() * 2 - 1) }
        let a = (0..<p.aCount).map { _ in value() }
        let b = (0..<p.bCount).map { _ in value() }
        // C: multiples of 2^-6 in [-4, 4] (exact data), or NaN where beta = 0 (must not be read).
        let c = (0..<max(1, p.m * p.ldc)).map { _ in
            p.beta == 0 ? Float.nan : Float(Int(rng.next() % 513) - 256) / 64
        }
        return (a, b, c)
    }

    /// alpha * sum bf16(a) bf16(b) + beta c in Double, and the magnitude |alpha| sum |a b| + |beta c|.
    static func reference(_ p: Product, _ a: [Float], _ b: [Float], _ c: [Float], i: Int, j: Int) -> (Double, Double) {
        var s = 0.0, g = 0.0
        for q in 0..<p.k {
            let x = Double(bf16Round(p.a(a, i, q))) * Double(bf16Round(p.b(b, q, j)))
            s += x
            g += abs(x)
        }
        let cTerm = p.beta == 0 ? 0 : Double(p.beta) * Double(c[i * p.ldc + j])
        return (Double(p.alpha) * s + cTerm, abs(Double(p.alpha)) * g + abs(cTerm))
    }

    static func gamma(_ n: Int) -> Double {
        let nu = Double(n) * 0x1p-24
        return nu / (1 - nu)
    }

    // MARK: running

    static func run(_ p: Product, _ a: [Float], _ b: [Float], _ c: [Float], path: Path = .parallel) -> [Float] {
        var out = c
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                out.withUnsafeMutableBufferPointer { o in
                    switch path {
                    case .parallel:
                        bf16gemm(transA: p.transA, transB: p.transB, m: p.m, n: p.n, k: p.k, alpha: p.alpha,
                                 a: a.baseAddress!, lda: p.lda, b: b.baseAddress!, ldb: p.ldb, beta: p.beta,
                                 c: o.baseAddress!, ldc: p.ldc)
                    case .callingThread:
                        var tally = GemmTally()
                        bf16gemmOnCallingThread(transA: p.transA, transB: p.transB, m: p.m, n: p.n, k: p.k,
                                                alpha: p.alpha, a: a.baseAddress!, lda: p.lda, b: b.baseAddress!,
                                                ldb: p.ldb, beta: p.beta, c: o.baseAddress!, ldc: p.ldc,
                                                tally: &tally)
                    }
                }
            }
        }
        return out
    }

    /// Runs `body` with DPO_BF16_FALLBACK=1, restoring the previous value.
    static func withFallbackForced<T>(_ body: () throws -> T) rethrows -> T {
        let name = BF16Gemm.fallbackVariable
        let previous = getenv(name).map { String(cString: $0) }
        setenv(name, "1", 1)
        defer { if let previous { setenv(name, previous, 1) } else { unsetenv(name) } }
        return try body()
    }

    /// Checks every element of `out` (the rows/columns outside C's n columns must be untouched).
    func check(_ p: Product, _ a: [Float], _ b: [Float], _ c: [Float], _ out: [Float], exact: Bool,
               label: String, file: StaticString = #filePath, line: UInt = #line) {
        var failures = 0
        for i in 0..<p.m {
            for j in 0..<p.ldc {
                let got = out[i * p.ldc + j]
                if j >= p.n {
                    if got.bitPattern != c[i * p.ldc + j].bitPattern {
                        failures += 1
                        if failures <= 3 { XCTFail("\(label) \(p): padding C[\(i), \(j)] written", file: file, line: line) }
                    }
                    continue
                }
                let (want, magnitude) = Self.reference(p, a, b, c, i: i, j: j)
                let tolerance = exact ? 0 : Self.gamma(p.k + 3) * magnitude + 1e-30
                if !(abs(Double(got) - want) <= tolerance) {
                    failures += 1
                    if failures <= 3 {
                        XCTFail("\(label) \(p): C[\(i), \(j)] = \(got), reference \(want), tolerance \(tolerance)",
                                file: file, line: line)
                    }
                }
            }
        }
    }

    /// Every shape class of the model's products (Llama linear layers forward NT, backward NN and
    /// TN, the LM head in chunks with a large vocabulary, one-row decoding), edge tiles (m, n not
    /// multiples of the kernel's 8 x 48 register tile), k odd and beyond its 1024-element pass,
    /// strided views, alpha and beta cases.
    static var shapes: [Product] {
        var s: [Product] = []
        for (ta, tb) in [(false, true), (false, false), (true, false), (true, true)] {
            s += [
                Product(transA: ta, transB: tb, m: 1, n: 1, k: 1),
                Product(transA: ta, transB: tb, m: 2, n: 3, k: 1, alpha: 0.5, beta: 1),
                Product(transA: ta, transB: tb, m: 1, n: 64, k: 96, beta: -0.5),            // one-row decode
                Product(transA: ta, transB: tb, m: 15, n: 33, k: 33, alpha: -2, pad: 3),   // edge tiles, k odd
                Product(transA: ta, transB: tb, m: 29, n: 47, k: 2, beta: 1),
                Product(transA: ta, transB: tb, m: 8, n: 48, k: 31, pad: 1),              // one whole tile
                Product(transA: ta, transB: tb, m: 16, n: 96, k: 64, alpha: 0.5, beta: 1), // whole tiles
                Product(transA: ta, transB: tb, m: 3, n: 130, k: 1025, alpha: 0.5),      // k past one pass, odd
            ]
        }
        // The model's classes at reduced size (smollm2-135m: hidden 576, MLP 1536, kv 192, rows 1024).
        s += [
            Product(transB: true, m: 200, n: 96, k: 288),                      // x W^T, k/v projection (tall)
            Product(transB: true, m: 70, n: 400, k: 192, beta: 1),             // x W^T, MLP up
            Product(m: 70, n: 192, k: 400, beta: 1),                           // dX += dY W
            Product(transA: true, m: 400, n: 192, k: 70, beta: 1),             // dW += dY^T X
            Product(transB: true, m: 33, n: 1500, k: 64),                      // LM head chunk, wide vocabulary
            Product(m: 33, n: 64, k: 2100, beta: 1),                           // head backward: dX, k = vocabulary
            Product(transA: true, m: 1500, n: 64, k: 33, beta: 1),             // head backward: dW
            Product(transA: true, transB: true, m: 45, n: 61, k: 77, alpha: 0.25, beta: -2, pad: 5),
        ]
        return s
    }

    // MARK: tests

    func testRoundingMatchesPyTorch() throws {
        let url = URL(fileURLWithPath: TestModels.fixturesDirectory()).appendingPathComponent("bf16/round.json")
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let cases = try XCTUnwrap(root["cases"] as? [[String: Any]])
        XCTAssertGreaterThan(cases.count, 600)
        var checkedNormal = 0
        for c in cases {
            let input = Float(bitPattern: UInt32(try XCTUnwrap(c["f32"] as? Int)))
            let torch = UInt32(try XCTUnwrap(c["bf16"] as? Int))
            let got = bf16Round(input)
            XCTAssertEqual(got.bitPattern & 0xFFFF, 0, "\(input): low half not zero")
            if try XCTUnwrap(c["nan"] as? Bool) {
                XCTAssertTrue(got.isNaN, "NaN \(input.bitPattern) became \(got)")
            } else if try XCTUnwrap(c["subnormal"] as? Bool) {
                // Flushed to a zero of the input's sign (torch keeps bf16 subnormals; the kernel's
                // VCVTNE2PS2BF16 flushes them).
                XCTAssertEqual(got.bitPattern, input.bitPattern & 0x8000_0000, "subnormal \(input.bitPattern)")
            } else {
                XCTAssertEqual(got.bitPattern >> 16, torch, "bf16 of \(input) (bits \(input.bitPattern))")
                checkedNormal += 1
            }
        }
        XCTAssertGreaterThan(checkedNormal, 600)
    }

    /// k = 1 products with B = +-1, 2 are the rounded inputs themselves: both implementations must
    /// round every fixture value (ties, overflow, infinities, zeros) exactly as bf16Round.
    func testBothPathsRoundInputsExactlyAsBF16Round() throws {
        let url = URL(fileURLWithPath: TestModels.fixturesDirectory()).appendingPathComponent("bf16/round.json")
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let values = try XCTUnwrap(root["cases"] as? [[String: Any]]).compactMap { c -> Float? in
            guard let bits = c["f32"] as? Int, c["nan"] as? Bool == false else { return nil }
            return Float(bitPattern: UInt32(bits))
        }
        let p = Product(m: values.count, n: 3, k: 1)
        let b: [Float] = [1, -1, 2]
        let c = [Float](repeating: .nan, count: p.m * p.n)
        var results = [("fallback", Self.withFallbackForced { Self.run(p, values, b, c) })]
        if BF16Gemm.hasNativeKernel { results.append(("native", Self.run(p, values, b, c))) }
        for (label, out) in results {
            for (i, x) in values.enumerated() {
                let r = bf16Round(x)
                for j in 0..<3 {
                    // Values, not bits: a zero product's sign depends on the zero it is added to.
                    XCTAssertEqual(out[i * 3 + j], r * b[j], "\(label): \(x) (bits \(x.bitPattern)) x \(b[j])")
                }
            }
        }
    }

    func testFallbackVariableSwitchesPath() {
        XCTAssertEqual(BF16Gemm.usesNativeKernel, BF16Gemm.hasNativeKernel)
        Self.withFallbackForced { XCTAssertFalse(BF16Gemm.usesNativeKernel) }
        XCTAssertEqual(BF16Gemm.usesNativeKernel, BF16Gemm.hasNativeKernel)
    }

    /// The AVX512-BF16 kernel on every shape class: bit-exact on exact data, within the fp32
    /// summation bound on general data, the same on one thread as split across workers.
    func testNativeKernelShapes() throws {
        try XCTSkipUnless(BF16Gemm.hasNativeKernel, "this CPU has no AVX512-BF16 (the fallback tests still run)")
        XCTAssertTrue(BF16Gemm.usesNativeKernel, "DPO_BF16_FALLBACK is set in the test environment")
        for (index, p) in Self.shapes.enumerated() {
            for exact in [true, false] {
                let (a, b, c) = Self.operands(p, exact: exact, seed: UInt64(100 + index))
                let out = Self.run(p, a, b, c)
                check(p, a, b, c, out, exact: exact, label: "native\(exact ? " exact" : "")")
                let single = Self.run(p, a, b, c, path: .callingThread)
                XCTAssertEqual(out.map(\.bitPattern), single.map(\.bitPattern), "native \(p): split != one thread")
            }
        }
    }

    /// The fallback (forced by DPO_BF16_FALLBACK=1) on the same shapes, and equal to the native
    /// kernel: bit for bit on exact data, within twice the summation bound on general data.
    func testFallbackShapesAndAgreementWithNative() throws {
        for (index, p) in Self.shapes.enumerated() {
            for exact in [true, false] {
                let (a, b, c) = Self.operands(p, exact: exact, seed: UInt64(100 + index))
                let fallback = Self.withFallbackForced { () -> [Float] in
                    XCTAssertFalse(BF16Gemm.usesNativeKernel)
                    return Self.run(p, a, b, c)
                }
                check(p, a, b, c, fallback, exact: exact, label: "fallback\(exact ? " exact" : "")")
                let fallbackSingle = Self.withFallbackForced { Self.run(p, a, b, c, path: .callingThread) }
                check(p, a, b, c, fallbackSingle, exact: exact, label: "fallback on the calling thread")
                guard BF16Gemm.hasNativeKernel else { continue }
                let native = Self.run(p, a, b, c)
                for i in 0..<p.m {
                    for j in 0..<p.n {
                        let (_, magnitude) = Self.reference(p, a, b, c, i: i, j: j)
                        let d = abs(Double(native[i * p.ldc + j]) - Double(fallback[i * p.ldc + j]))
                        let tolerance = exact ? 0 : 2 * Self.gamma(p.k + 3) * magnitude + 1e-30
                        XCTAssertLessThanOrEqual(d, tolerance, "native vs fallback \(p) C[\(i), \(j)]")
                    }
                }
            }
        }
    }

    /// Exact data must fail the check when the inputs are not rounded: the test can tell.
    func testExactDataDetectsUnroundedInputs() {
        let p = Product(transB: true, m: 5, n: 7, k: 40)
        let (a, b, c) = Self.operands(p, exact: true, seed: 5)
        var unrounded = 0
        for i in 0..<p.m {
            for j in 0..<p.n {
                var s = 0.0
                for q in 0..<p.k { s += Double(p.a(a, i, q)) * Double(p.b(b, q, j)) }
                if s != Self.reference(p, a, b, c, i: i, j: j).0 { unrounded += 1 }
            }
        }
        XCTAssertEqual(unrounded, p.m * p.n)
    }

    /// k = 0: C = beta C, and C not read when beta = 0.
    func testEmptyInnerDimensionScalesC() {
        for beta: Float in [0, 1, -0.5] {
            let p = Product(m: 17, n: 35, k: 0, beta: beta)
            let (a, b, c) = Self.operands(p, exact: true, seed: 9)
            var outputs = [Self.withFallbackForced { Self.run(p, a, b, c) }]
            if BF16Gemm.hasNativeKernel { outputs.append(Self.run(p, a, b, c)) }
            for out in outputs {
                for i in 0..<(p.m * p.n) {
                    XCTAssertEqual(out[i], beta == 0 ? 0 : beta * c[i], "beta \(beta)")
                }
            }
        }
    }

    /// A large product (several passes of every blocking level, two workers): the native kernel
    /// equals the fallback bit for bit on exact data, and sampled elements equal the reference.
    func testLargeProduct() throws {
        try XCTSkipUnless(BF16Gemm.hasNativeKernel, "this CPU has no AVX512-BF16")
        for p in [Product(transB: true, m: 1100, n: 1300, k: 2100, beta: 1),
                  Product(transA: true, m: 1300, n: 1100, k: 1100, alpha: 0.5)] {
            let (a, b, c) = Self.operands(p, exact: true, seed: 21)
            let native = Self.run(p, a, b, c)
            let fallback = Self.withFallbackForced { Self.run(p, a, b, c) }
            XCTAssertEqual(native.map(\.bitPattern), fallback.map(\.bitPattern), "\(p)")
            let single = Self.run(p, a, b, c, path: .callingThread)
            XCTAssertEqual(native.map(\.bitPattern), single.map(\.bitPattern), "\(p): split != one thread")
            var rng = Xoshiro256(seed: 3)
            for _ in 0..<300 {
                let i = Int(rng.next() % UInt64(p.m)), j = Int(rng.next() % UInt64(p.n))
                XCTAssertEqual(Double(native[i * p.ldc + j]), Self.reference(p, a, b, c, i: i, j: j).0, "\(p) C[\(i), \(j)]")
            }
        }
    }
}
