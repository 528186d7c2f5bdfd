import XCTest
@testable import DPO

/// Each compute kernel against a naive loop written here in Double, on random inputs with awkward
/// sizes (widths that are not multiples of the 16-lane SIMD blocks, row counts larger than the
/// kernels' parallel grain so the threaded paths run, uneven splits over 3 threads). Backward
/// kernels are checked against central finite differences of the naive forward in Double.
final class KernelTests: XCTestCase {
    private var savedThreadCount = 1

    override func setUp() {
        super.setUp()
        // 3 threads (even on a 2-core machine): splits are uneven, so chunk boundaries are exercised.
        savedThreadCount = Threads.count
        Threads.setCount(3)
    }

    override func tearDown() {
        Threads.setCount(savedThreadCount)
        super.tearDown()
    }

    // MARK: - RMSNorm

    /// y = w * x * rstd, rstd = 1 / sqrt(mean x^2 + eps), one row, in Double.
    private func naiveRMSNormRow(_ x: ArraySlice<Double>, _ w: [Double], eps: Double) -> (y: [Double], rstd: Double) {
        let x = Array(x)
        let rstd = 1 / (x.reduce(0) { $0 + $1 * $1 } / Double(x.count) + eps).squareRoot()
        return (zip(x, w).map { $1 * $0 * rstd }, rstd)
    }

    func testRMSNormForward() {
        var rng = Xoshiro256(seed: 101)
        let rows = 101, dim = 37, eps: Float = 1e-5
        let x = kernelRandoms(rows * dim, &rng, scale: 1.5)
        let w = kernelRandoms(dim, &rng, scale: 0.3, offset: 1)
        var y = [Float](repeating: .nan, count: rows * dim), rstd = [Float](repeating: .nan, count: rows)
        rmsnormForward(&y, rstd: &rstd, x, weight: w, rows: rows, dim: dim, eps: eps)
        let xd = x.map(Double.init), wd = w.map(Double.init)
        for r in 0..<rows {
            let (ey, er) = naiveRMSNormRow(xd[(r * dim)..<((r + 1) * dim)], wd, eps: Double(eps))
            XCTAssertEqual(Double(rstd[r]), er, accuracy: 1e-6 * er, "rstd[\(r)]")
            for j in 0..<dim {
                XCTAssertEqual(Double(y[r * dim + j]), ey[j], accuracy: 1e-5 * max(1, abs(ey[j])), "y[\(r), \(j)]")
            }
        }
    }

    func testRMSNormForwardGathered() {
        var rng = Xoshiro256(seed: 102)
        let inputRows = 60, dim = 37, eps: Float = 1e-6
        // 70 output rows from 60 input rows: rows repeat (5 == 6, 0 == 69, 12 three times).
        var gather = (0..<70).map { Int32(($0 * 7) % inputRows) }
        gather[6] = gather[5]; gather[69] = gather[0]; gather[30] = 12; gather[31] = 12; gather[32] = 12
        let x = kernelRandoms(inputRows * dim, &rng)
        let w = kernelRandoms(dim, &rng, scale: 0.3, offset: 1)
        var y = [Float](repeating: .nan, count: gather.count * dim)
        var rstd = [Float](repeating: .nan, count: gather.count)
        rmsnormForward(&y, rstd: &rstd, x, weight: w, rows: gather.count, dim: dim, eps: eps, gather: gather)
        let xd = x.map(Double.init), wd = w.map(Double.init)
        for (r, src) in gather.enumerated() {
            let s = Int(src)
            let (ey, er) = naiveRMSNormRow(xd[(s * dim)..<((s + 1) * dim)], wd, eps: Double(eps))
            XCTAssertEqual(Double(rstd[r]), er, accuracy: 1e-6 * er, "rstd[\(r)]")
            for j in 0..<dim {
                XCTAssertEqual(Double(y[r * dim + j]), ey[j], accuracy: 1e-5 * max(1, abs(ey[j])), "y[\(r), \(j)]")
            }
        }
    }

    /// Backward against finite differences of the naive forward of L = sum dy * y, for every entry
    /// of x (per output row, and scattered per input row when rows repeat) and of the weight;
    /// accumulate false overwrites dx, accumulate true adds to it, dWeight always accumulates.
    private func checkRMSNormBackward(inputRows: Int, gather: [Int32]?, seed: UInt64,
                                      file: StaticString = #filePath, line: UInt = #line) {
        var rng = Xoshiro256(seed: seed)
        let dim = 37, eps: Float = 1e-5
        let rows = gather?.count ?? inputRows
        let source = { (r: Int) -> Int in gather.map { Int($0[r]) } ?? r }
        let x = kernelRandoms(inputRows * dim, &rng)
        let w = kernelRandoms(dim, &rng, scale: 0.3, offset: 1)
        let dy = kernelRandoms(rows * dim, &rng)
        var y = [Float](repeating: 0, count: rows * dim), rstd = [Float](repeating: 0, count: rows)
        withOptionalPointer(gather) {
            rmsnormForward(&y, rstd: &rstd, x, weight: w, rows: rows, dim: dim, eps: eps, gather: $0)
        }

        // accumulate: false, on a dx full of garbage; dWeight starts from a non-zero prefill.
        var dx = [Float](repeating: 1e6, count: rows * dim)
        let dwPrefill = kernelRandoms(dim, &rng)
        var dw = dwPrefill
        withOptionalPointer(gather) {
            rmsnormBackward(dx: &dx, dWeight: &dw, dy: dy, x: x, rstd: rstd, weight: w, rows: rows, dim: dim,
                            accumulate: false, gather: $0)
        }

        let xd = x.map(Double.init), wd = w.map(Double.init), dyd = dy.map(Double.init)
        let h = 1e-6
        // Row loss L_r(x_src) = sum_j dy[r, j] * y_r[j].
        func rowLoss(_ r: Int, _ xs: ArraySlice<Double>, _ wv: [Double]) -> Double {
            let y = naiveRMSNormRow(xs, wv, eps: Double(eps)).y
            return (0..<dim).reduce(0) { $0 + dyd[r * dim + $1] * y[$1] }
        }
        // dx, per output row (the kernel writes dx densely, one row per output row).
        var maxGrad = 0.0, worst = 0.0
        var fdRows = [Double](repeating: 0, count: rows * dim)
        for r in 0..<rows {
            let s = source(r)
            var xs = Array(xd[(s * dim)..<((s + 1) * dim)])
            for j in 0..<dim {
                let saved = xs[j]
                xs[j] = saved + h; let up = rowLoss(r, xs[...], wd)
                xs[j] = saved - h; let down = rowLoss(r, xs[...], wd)
                xs[j] = saved
                fdRows[r * dim + j] = (up - down) / (2 * h)
                maxGrad = max(maxGrad, abs(fdRows[r * dim + j]))
                worst = max(worst, abs(Double(dx[r * dim + j]) - fdRows[r * dim + j]))
            }
        }
        XCTAssertLessThan(worst, 1e-4 * maxGrad + 1e-6, "dx vs finite differences: worst \(worst), max |g| \(maxGrad)",
                          file: file, line: line)

        // Scattered to input rows, dx is the gradient of the total loss w.r.t. x (a repeated row
        // gets the sum of its uses): finite differences of the total loss on every repeated row.
        if let gather {
            var counts: [Int32: Int] = [:]
            for g in gather { counts[g, default: 0] += 1 }
            for (src, count) in counts where count > 1 {
                let s = Int(src)
                for j in 0..<dim {
                    var scattered = 0.0
                    for r in 0..<rows where gather[r] == src { scattered += Double(dx[r * dim + j]) }
                    func total(_ delta: Double) -> Double {
                        var xs = Array(xd[(s * dim)..<((s + 1) * dim)])
                        xs[j] += delta
                        return (0..<rows).filter { gather[$0] == src }.reduce(0) { $0 + rowLoss($1, xs[...], wd) }
                    }
                    let fd = (total(h) - total(-h)) / (2 * h)
                    XCTAssertEqual(scattered, fd, accuracy: 1e-4 * maxGrad + 1e-6,
                                   "scattered dx of input row \(s) (used \(count) times), column \(j)",
                                   file: file, line: line)
                }
            }
        }

        // dWeight: finite differences of the total loss, every entry, added to the prefill.
        var wv = wd
        for j in 0..<dim {
            func total() -> Double {
                (0..<rows).reduce(0) { acc, r in
                    let s = source(r)
                    return acc + rowLoss(r, xd[(s * dim)..<((s + 1) * dim)], wv)
                }
            }
            let saved = wv[j]
            wv[j] = saved + h; let up = total()
            wv[j] = saved - h; let down = total()
            wv[j] = saved
            let fd = (up - down) / (2 * h)
            XCTAssertEqual(Double(dw[j]) - Double(dwPrefill[j]), fd, accuracy: 1e-4 * max(1, abs(fd)),
                           "dWeight[\(j)]", file: file, line: line)
        }

        // accumulate: true adds the same values onto what dx holds.
        let prefill = kernelRandoms(rows * dim, &rng)
        var dxAcc = prefill
        var dw2 = [Float](repeating: 0, count: dim)
        withOptionalPointer(gather) {
            rmsnormBackward(dx: &dxAcc, dWeight: &dw2, dy: dy, x: x, rstd: rstd, weight: w, rows: rows, dim: dim,
                            accumulate: true, gather: $0)
        }
        for i in 0..<(rows * dim) {
            XCTAssertEqual(dxAcc[i], prefill[i] + dx[i], accuracy: 1e-6 * max(1, abs(prefill[i])),
                           "accumulated dx[\(i)]", file: file, line: line)
        }
        for j in 0..<dim {
            XCTAssertEqual(dw2[j], dw[j] - dwPrefill[j], accuracy: 1e-4 * max(1, abs(dw2[j])),
                           "dWeight from zero [\(j)]", file: file, line: line)
        }
    }

    func testRMSNormBackward() {
        checkRMSNormBackward(inputRows: 83, gather: nil, seed: 103)
    }

    func testRMSNormBackwardGathered() {
        // 66 output rows over 40 input rows, with rows used twice and three times.
        var gather = (0..<66).map { Int32(($0 * 11) % 40) }
        gather[10] = 3; gather[11] = 3; gather[50] = 3; gather[65] = gather[0]
        checkRMSNormBackward(inputRows: 40, gather: gather, seed: 104)
    }

    // MARK: - RoPE

    /// transformers' `_compute_default_rope_parameters`, re-typed: 1 / base ** (arange(0, d, 2).float() / d),
    /// the exponent in fp32 as torch forms it, the power in Double.
    private func referenceDefaultInvFreq(headDim: Int, theta: Double) -> [Double] {
        stride(from: 0, to: headDim, by: 2).map { 1 / pow(theta, Double(Float($0) / Float(headDim))) }
    }

    /// transformers' `_compute_llama3_parameters`, re-typed in Double.
    private func referenceLlama3InvFreq(headDim: Int, theta: Double, factor: Double, low: Double,
                                        high: Double, original: Int) -> (invFreq: [Double], bands: Set<String>) {
        let oldContext = Double(original)
        let lowFreqWavelen = oldContext / low
        let highFreqWavelen = oldContext / high
        var bands = Set<String>()
        let inv = referenceDefaultInvFreq(headDim: headDim, theta: theta).map { f -> Double in
            let wavelen = 2 * Double.pi / f
            let llama = wavelen > lowFreqWavelen ? f / factor : f
            let smooth = (oldContext / wavelen - low) / (high - low)
            let smoothed = (1 - smooth) * llama / factor + smooth * llama
            let isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen)
            bands.insert(isMedium ? "medium" : wavelen > lowFreqWavelen ? "low" : "high")
            return isMedium ? smoothed : llama
        }
        return (inv, bands)
    }

    func testRopeInverseFrequenciesDefault() {
        for (headDim, theta) in [(64, 10_000.0), (38, 500_000.0), (6, 100_000.0), (128, 1_000_000.0)] {
            let got = ropeInverseFrequencies(headDim: headDim, theta: theta, scaling: .none)
            let expected = referenceDefaultInvFreq(headDim: headDim, theta: theta)
            XCTAssertEqual(got.count, headDim / 2)
            for i in 0..<expected.count {
                XCTAssertEqual(Double(got[i]), expected[i], accuracy: 2e-7 * expected[i], "d=\(headDim) θ=\(theta) [\(i)]")
            }
        }
    }

    func testRopeInverseFrequenciesLlama3() {
        // Llama-3.2-1B, the committed fixture's settings and TestModels.mhaUntiedBias; each has all
        // three bands (kept, interpolated, divided by factor).
        let cases: [(Int, Double, Double, Double, Double, Int)] = [
            (64, 500_000, 32, 1, 4, 8192), (24, 500_000, 8, 1, 4, 32), (6, 500_000, 8, 1, 4, 8),
            (38, 10_000, 16, 2, 8, 64),
        ]
        for (headDim, theta, factor, low, high, original) in cases {
            let got = ropeInverseFrequencies(
                headDim: headDim, theta: theta,
                scaling: .llama3(factor: factor, lowFreqFactor: low, highFreqFactor: high,
                                 originalMaxPositionEmbeddings: original))
            let (expected, bands) = referenceLlama3InvFreq(headDim: headDim, theta: theta, factor: factor,
                                                           low: low, high: high, original: original)
            if headDim != 6 { XCTAssertEqual(bands, ["low", "medium", "high"], "d=\(headDim)") }
            XCTAssertEqual(got.count, headDim / 2)
            for i in 0..<expected.count {
                XCTAssertEqual(Double(got[i]), expected[i], accuracy: 1e-6 * expected[i],
                               "d=\(headDim) original=\(original) [\(i)]")
            }
        }
    }

    /// Bit-for-bit against the values torch computes with transformers 5.23 (fp32; printed with
    /// `ROPE_INIT_FUNCTIONS[...]` for head_dim 64, rope_theta 500000), default and Llama-3.2-1B's llama3
    /// scaling (factor 32, low 1, high 4, original 8192): entries 0...14 kept, 15...17 interpolated,
    /// 18...31 divided by 32.
    func testRopeInverseFrequenciesMatchTorchBitForBit() {
        let torchDefault: [Float] = [
            0x1.000000p+0, 0x1.53c38cp-1, 0x1.c2ef78p-2, 0x1.2b3dc6p-2, 0x1.8d2760p-3, 0x1.078d40p-3,
            0x1.5dc95ap-4, 0x1.d03ccep-5, 0x1.341190p-5, 0x1.98de92p-6, 0x1.0f5386p-6, 0x1.681adap-7,
            0x1.ddee9ep-8, 0x1.3d2804p-8, 0x1.a4ee40p-9, 0x1.175482p-9, 0x1.72ba42p-10, 0x1.ec07d4p-11,
            0x1.46831ap-11, 0x1.b15902p-12, 0x1.1f91f0p-12, 0x1.7da9e8p-13, 0x1.fa8b86p-14, 0x1.5024d6p-14,
            0x1.be2188p-15, 0x1.280d96p-15, 0x1.88ec20p-16, 0x1.04be68p-16, 0x1.5a0f4ep-17, 0x1.cb4a9ap-18,
            0x1.30c94ep-18, 0x1.948360p-19,
        ]
        let torchLlama3: [Float] = [
            0x1.000000p+0, 0x1.53c38cp-1, 0x1.c2ef78p-2, 0x1.2b3dc6p-2, 0x1.8d2760p-3, 0x1.078d40p-3,
            0x1.5dc95ap-4, 0x1.d03ccep-5, 0x1.341190p-5, 0x1.98de92p-6, 0x1.0f5386p-6, 0x1.681adap-7,
            0x1.ddee9ep-8, 0x1.3d2804p-8, 0x1.a4ee40p-9, 0x1.524f36p-10, 0x1.c26c40p-12, 0x1.9731eep-14,
            0x1.46831ap-16, 0x1.b15902p-17, 0x1.1f91f0p-17, 0x1.7da9e8p-18, 0x1.fa8b86p-19, 0x1.5024d6p-19,
            0x1.be2188p-20, 0x1.280d96p-20, 0x1.88ec20p-21, 0x1.04be68p-21, 0x1.5a0f4ep-22, 0x1.cb4a9ap-23,
            0x1.30c94ep-23, 0x1.948360p-24,
        ]
        let gotDefault = ropeInverseFrequencies(headDim: 64, theta: 500_000, scaling: .none)
        for i in 0..<32 {
            XCTAssertEqual(gotDefault[i].bitPattern, torchDefault[i].bitPattern,
                           "default [\(i)]: \(gotDefault[i]) vs torch \(torchDefault[i])")
        }
        let gotLlama3 = ropeInverseFrequencies(headDim: 64, theta: 500_000,
                                               scaling: .llama3(factor: 32, lowFreqFactor: 1, highFreqFactor: 4,
                                                                originalMaxPositionEmbeddings: 8192))
        for i in 0..<32 {
            // transformers forms wavelen = 2 * math.pi / inv_freq with pi rounded to nearest in fp32.
            XCTAssertEqual(gotLlama3[i].bitPattern, torchLlama3[i].bitPattern,
                           "llama3 [\(i)]: \(gotLlama3[i]) vs torch \(torchLlama3[i]) "
                           + "(\(Int(gotLlama3[i].bitPattern) - Int(torchLlama3[i].bitPattern)) ulp)")
        }
    }

    func testRopeTables() {
        var rng = Xoshiro256(seed: 105)
        let tokens = 211, headDim = 38
        let invFreq = ropeInverseFrequencies(headDim: headDim, theta: 500_000,
                                             scaling: .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4,
                                                              originalMaxPositionEmbeddings: 64))
        let half = invFreq.count
        // Small, large and repeated positions (a packed stream restarts at 0).
        var positions = (0..<tokens).map { _ in Int32(rng.next() % 5000) }
        positions[0] = 0; positions[1] = 1; positions[2] = 131_071; positions[3] = 0
        var cosT = [Float](repeating: .nan, count: tokens * half), sinT = cosT
        ropeTables(cos: &cosT, sin: &sinT, positions: positions, tokens: tokens, invFreq: invFreq)
        for t in 0..<tokens {
            for i in 0..<half {
                // The angle is the fp32 product p * f, as torch computes it.
                let angle = Double(Float(positions[t]) * invFreq[i])
                XCTAssertEqual(Double(cosT[t * half + i]), cos(angle), accuracy: 1e-7, "cos[\(t), \(i)]")
                XCTAssertEqual(Double(sinT[t * half + i]), sin(angle), accuracy: 1e-7, "sin[\(t), \(i)]")
            }
        }
        for i in 0..<half { XCTAssertEqual(cosT[i], 1); XCTAssertEqual(sinT[i], 0) }
    }

    func testRopeApply() {
        var rng = Xoshiro256(seed: 106)
        let tokens = 203, heads = 3, headDim = 38, half = headDim / 2, width = heads * headDim
        let invFreq = ropeInverseFrequencies(headDim: headDim, theta: 10_000, scaling: .none)
        let positions = (0..<tokens).map { _ in Int32(rng.next() % 3000) }
        var cosT = [Float](repeating: 0, count: tokens * half), sinT = cosT
        ropeTables(cos: &cosT, sin: &sinT, positions: positions, tokens: tokens, invFreq: invFreq)
        let x = kernelRandoms(tokens * width, &rng)

        // Forward: the rotate-half formula, in Double from the same tables.
        var rx = x
        ropeApply(&rx, cos: cosT, sin: sinT, tokens: tokens, heads: heads, headDim: headDim)
        for t in 0..<tokens {
            for h in 0..<heads {
                let base = (t * heads + h) * headDim
                for i in 0..<half {
                    let c = Double(cosT[t * half + i]), s = Double(sinT[t * half + i])
                    let x1 = Double(x[base + i]), x2 = Double(x[base + i + half])
                    XCTAssertEqual(Double(rx[base + i]), x1 * c - x2 * s, accuracy: 1e-6, "out[\(t), \(h), \(i)]")
                    XCTAssertEqual(Double(rx[base + i + half]), x2 * c + x1 * s, accuracy: 1e-6,
                                   "out[\(t), \(h), \(i + half)]")
                }
            }
        }

        // inverse: true undoes the forward.
        var back = rx
        ropeApply(&back, cos: cosT, sin: sinT, tokens: tokens, heads: heads, headDim: headDim, inverse: true)
        for i in 0..<x.count { XCTAssertEqual(back[i], x[i], accuracy: 2e-6 * max(1, abs(x[i])), "R^T R x [\(i)]") }

        // The inverse is the transpose: <R x, y> == <x, R^T y>.
        let y = kernelRandoms(tokens * width, &rng)
        var rty = y
        ropeApply(&rty, cos: cosT, sin: sinT, tokens: tokens, heads: heads, headDim: headDim, inverse: true)
        let lhs = zip(rx, y).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let rhs = zip(x, rty).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let norm = zip(x, y).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) }
        XCTAssertEqual(lhs, rhs, accuracy: 1e-6 * norm)
        // And the rotation keeps norms.
        for t in [0, 100, tokens - 1] {
            let n0 = x[(t * width)..<((t + 1) * width)].reduce(0.0) { $0 + Double($1) * Double($1) }
            let n1 = rx[(t * width)..<((t + 1) * width)].reduce(0.0) { $0 + Double($1) * Double($1) }
            XCTAssertEqual(n0, n1, accuracy: 1e-5 * n0)
        }
    }

    // MARK: - SwiGLU

    func testSwiGLUForwardAndBackward() {
        var rng = Xoshiro256(seed: 107)
        let n = 3 * 4096 + 37
        var gate = kernelRandoms(n, &rng, scale: 3)
        gate[0] = 0; gate[1] = -30; gate[2] = 30; gate[3] = 88; gate[4] = -88
        let up = kernelRandoms(n, &rng), dh = kernelRandoms(n, &rng)
        func silu(_ g: Double) -> Double { g / (1 + exp(-g)) }

        var h = [Float](repeating: .nan, count: n)
        swigluForward(&h, gate: gate, up: up, count: n)
        for i in 0..<n {
            let e = silu(Double(gate[i])) * Double(up[i])
            XCTAssertEqual(Double(h[i]), e, accuracy: 1e-6 * max(1, abs(e)), "h[\(i)] (gate \(gate[i]))")
        }

        var dGate = [Float](repeating: .nan, count: n), dUp = dGate, hRecomputed = dGate
        swigluBackward(dGate: &dGate, dUp: &dUp, h: &hRecomputed, dh: dh, gate: gate, up: up, count: n)
        XCTAssertEqual(hRecomputed, h)
        let step = 1e-6
        for i in 0..<n {
            let g = Double(gate[i]), u = Double(up[i]), d = Double(dh[i])
            // Finite differences of L = dh * silu(g) * u.
            let fdGate = d * u * (silu(g + step) - silu(g - step)) / (2 * step)
            let fdUp = d * ((silu(g) * (u + step)) - silu(g) * (u - step)) / (2 * step)
            XCTAssertEqual(Double(dGate[i]), fdGate, accuracy: 1e-5 * max(1, abs(fdGate)), "dGate[\(i)] (gate \(g))")
            XCTAssertEqual(Double(dUp[i]), fdUp, accuracy: 1e-5 * max(1, abs(fdUp)), "dUp[\(i)]")
        }
        // Without `h`.
        var dGate2 = [Float](repeating: 0, count: n), dUp2 = dGate2
        swigluBackward(dGate: &dGate2, dUp: &dUp2, h: nil, dh: dh, gate: gate, up: up, count: n)
        XCTAssertEqual(dGate2, dGate)
        XCTAssertEqual(dUp2, dUp)
    }

    // MARK: - Attention

    /// Keys visible to each token: every token of the parent segment, then the own segment up to itself.
    private func visibleKeys(_ segments: [PackedTokens.Segment]) -> [[Int]] {
        var visible: [[Int]] = []
        for seg in segments {
            var parent: [Int] = []
            if seg.parent >= 0 {
                let p = segments[seg.parent]
                parent = Array(p.start..<(p.start + p.count))
            }
            for i in 0..<seg.count { visible.append(parent + Array(seg.start...(seg.start + i))) }
        }
        return visible
    }

    /// Naive per-query softmax attention in Double; returns out [T, heads * hd] and lse [T, heads].
    private func naiveAttention(q: [Double], k: [Double], v: [Double], visible: [[Int]],
                                heads: Int, kvHeads: Int, headDim hd: Int) -> (out: [Double], lse: [Double]) {
        let T = visible.count, qW = heads * hd, kvW = kvHeads * hd
        var out = [Double](repeating: 0, count: T * qW), lse = [Double](repeating: 0, count: T * heads)
        let scale = 1 / Double(hd).squareRoot()
        for t in 0..<T {
            for h in 0..<heads {
                let g = h / (heads / kvHeads)
                let scores = visible[t].map { j -> Double in
                    var s = 0.0
                    for d in 0..<hd { s += q[t * qW + h * hd + d] * k[j * kvW + g * hd + d] }
                    return s * scale
                }
                let m = scores.max()!
                let sum = scores.reduce(0) { $0 + exp($1 - m) }
                lse[t * heads + h] = m + log(sum)
                for (idx, j) in visible[t].enumerated() {
                    let p = exp(scores[idx] - m) / sum
                    for d in 0..<hd { out[t * qW + h * hd + d] += p * v[j * kvW + g * hd + d] }
                }
            }
        }
        return (out, lse)
    }

    /// Packed segments: a long plain sequence (more rows than the softmax grain x threads), a shared
    /// prompt with two children, a short plain sequence and a one-token sequence.
    private let attentionSegments: [PackedTokens.Segment] = [
        .init(start: 0, count: 100),
        .init(start: 100, count: 9),
        .init(start: 109, count: 70, parent: 1),
        .init(start: 179, count: 5, parent: 1),
        .init(start: 184, count: 3),
        .init(start: 187, count: 1),
    ]

    func testAttentionForward() {
        var rng = Xoshiro256(seed: 108)
        let segments = attentionSegments
        let T = 188, shape = AttentionShape(heads: 4, kvHeads: 2, headDim: 11)
        let q = kernelRandoms(T * shape.qWidth, &rng), k = kernelRandoms(T * shape.kvWidth, &rng)
        let v = kernelRandoms(T * shape.kvWidth, &rng)
        let scratchCount = attentionScratchCount(segments)
        // Row blocks of 64: the 100-token segment's first block is the largest, [64, 100]; the
        // 70-token child of a 9-token prompt runs as [64, 9 + 64] and [6, 9 + 70].
        XCTAssertEqual(attentionRowBlock, 64)
        XCTAssertEqual(scratchCount, 64 * 100)
        var scratch = [Float](repeating: .nan, count: 2 * scratchCount * Threads.count)
        var out = [Float](repeating: .nan, count: T * shape.qWidth), lse = [Float](repeating: .nan, count: T * shape.heads)
        attentionForward(out: &out, lse: &lse, q: q, k: k, v: v, segments: segments, shape: shape, scratch: &scratch,
                         scratchCount: scratchCount)
        let visible = visibleKeys(segments)
        let expected = naiveAttention(q: q.map(Double.init), k: k.map(Double.init), v: v.map(Double.init),
                                      visible: visible, heads: 4, kvHeads: 2, headDim: 11)
        for i in 0..<out.count {
            XCTAssertEqual(Double(out[i]), expected.out[i], accuracy: 1e-5, "out[\(i / shape.qWidth), \(i % shape.qWidth)]")
        }
        for i in 0..<lse.count {
            XCTAssertEqual(Double(lse[i]), expected.lse[i], accuracy: 1e-5, "lse[\(i / 4), head \(i % 4)]")
        }
        // A one-token sequence attends only to itself: its output is its own value row.
        for h in 0..<4 {
            for d in 0..<11 {
                XCTAssertEqual(out[187 * shape.qWidth + h * 11 + d], v[187 * shape.kvWidth + (h / 2) * 11 + d], accuracy: 1e-6)
            }
        }
    }

    func testAttentionBackward() {
        var rng = Xoshiro256(seed: 109)
        let segments = attentionSegments
        let T = 188, heads = 4, kvHeads = 2, hd = 11
        let shape = AttentionShape(heads: heads, kvHeads: kvHeads, headDim: hd)
        let q = kernelRandoms(T * shape.qWidth, &rng), k = kernelRandoms(T * shape.kvWidth, &rng)
        let v = kernelRandoms(T * shape.kvWidth, &rng), dOut = kernelRandoms(T * shape.qWidth, &rng)
        let scratchCount = attentionScratchCount(segments)
        var scratch = [Float](repeating: 0, count: 2 * scratchCount * Threads.count)
        var out = [Float](repeating: 0, count: T * shape.qWidth), lse = [Float](repeating: 0, count: T * heads)
        attentionForward(out: &out, lse: &lse, q: q, k: k, v: v, segments: segments, shape: shape, scratch: &scratch,
                         scratchCount: scratchCount)
        var dq = [Float](repeating: 1e6, count: T * shape.qWidth)   // overwritten
        var dk = [Float](repeating: 0, count: T * shape.kvWidth), dv = dk   // accumulated into
        var recomputed = [Float](repeating: .nan, count: out.count)  // the backward recomputes out
        attentionBackward(dq: &dq, dk: &dk, dv: &dv, dOut: dOut, out: &recomputed, lse: lse, q: q, k: k, v: v,
                          segments: segments, shape: shape, scratch: &scratch, scratchCount: scratchCount)
        for i in 0..<out.count { XCTAssertEqual(recomputed[i], out[i], accuracy: 1e-6, "recomputed out[\(i)]") }

        let visible = visibleKeys(segments)
        // tensors[0...2] = q, k, v in Double; the loss reads them, the checks perturb one entry.
        var tensors = [q.map(Double.init), k.map(Double.init), v.map(Double.init)]
        let dOutD = dOut.map(Double.init)
        func loss() -> Double {
            let o = naiveAttention(q: tensors[0], k: tensors[1], v: tensors[2], visible: visible,
                                   heads: heads, kvHeads: kvHeads, headDim: hd).out
            return zip(o, dOutD).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let step = 1e-5
        // Entries: random ones plus the first and last token of every segment, and every prompt row
        // for k and v (they receive gradient from both child segments and the prompt itself).
        func entries(width: Int, extraRows: [Int]) -> [Int] {
            var rows = Set(extraRows)
            for s in segments { rows.insert(s.start); rows.insert(s.start + s.count - 1) }
            var result = rows.sorted().map { $0 * width + Int(rng.next() % UInt64(width)) }
            for _ in 0..<20 { result.append(Int(rng.next() % UInt64(T * width))) }
            return result
        }
        func check(_ name: String, _ which: Int, _ grad: [Float], width: Int, extraRows: [Int]) {
            let maxGrad = grad.map { abs(Double($0)) }.max()!
            for e in entries(width: width, extraRows: extraRows) {
                let saved = tensors[which][e]
                tensors[which][e] = saved + step; let up = loss()
                tensors[which][e] = saved - step; let down = loss()
                tensors[which][e] = saved
                let fd = (up - down) / (2 * step)
                XCTAssertEqual(Double(grad[e]), fd, accuracy: 2e-4 * maxGrad + 1e-6,
                               "\(name)[token \(e / width), \(e % width)]")
            }
            // Directional derivative over the whole tensor.
            let saved = tensors[which]
            let dir = (0..<saved.count).map { _ in rng.nextUniform() * 2 - 1 }
            tensors[which] = (0..<saved.count).map { saved[$0] + step * dir[$0] }
            let up = loss()
            tensors[which] = (0..<saved.count).map { saved[$0] - step * dir[$0] }
            let down = loss()
            tensors[which] = saved
            let fd = (up - down) / (2 * step)
            let analytic = zip(grad, dir).reduce(0.0) { $0 + Double($1.0) * $1.1 }
            XCTAssertEqual(analytic, fd, accuracy: 1e-4 * max(abs(fd), maxGrad), "\(name) directional")
        }
        let promptRows = Array(100..<109)
        check("dq", 0, dq, width: shape.qWidth, extraRows: [])
        check("dk", 1, dk, width: shape.kvWidth, extraRows: promptRows)
        check("dv", 2, dv, width: shape.kvWidth, extraRows: promptRows)

        // dk and dv accumulate; dq is overwritten.
        let dkPrefill = kernelRandoms(dk.count, &rng), dvPrefill = kernelRandoms(dv.count, &rng)
        var dq2 = [Float](repeating: -7, count: dq.count), dk2 = dkPrefill, dv2 = dvPrefill
        attentionBackward(dq: &dq2, dk: &dk2, dv: &dv2, dOut: dOut, out: &recomputed, lse: lse, q: q, k: k, v: v,
                          segments: segments, shape: shape, scratch: &scratch, scratchCount: scratchCount)
        XCTAssertEqual(dq2, dq)
        for i in 0..<dk.count {
            XCTAssertEqual(dk2[i], dkPrefill[i] + dk[i], accuracy: 1e-5 * max(1, abs(dkPrefill[i])))
            XCTAssertEqual(dv2[i], dvPrefill[i] + dv[i], accuracy: 1e-5 * max(1, abs(dvPrefill[i])))
        }
    }

    func testAttentionTasksKeepFamiliesTogetherInTheBackward() {
        let segments = attentionSegments
        let forward = attentionTasks(segments, kvHeads: 2, byFamily: false)
        XCTAssertEqual(forward.count, segments.count * 2)
        XCTAssertEqual(forward.map(\.cost), forward.map(\.cost).sorted(by: >), "costliest first")
        let backward = attentionTasks(segments, kvHeads: 2, byFamily: true)
        // Families: [0], [1, 2, 3] (prompt and its two children), [4], [5]; one task per kv group.
        XCTAssertEqual(Set(backward.map(\.segments)), [[0], [1, 2, 3], [4], [5]])
        XCTAssertEqual(backward.count, 8)
        for g in 0..<2 {
            let covered = backward.filter { $0.group == g }.flatMap(\.segments).sorted()
            XCTAssertEqual(covered, Array(0..<segments.count), "group \(g) covers every segment once")
        }
        XCTAssertEqual(backward.first { $0.segments == [1, 2, 3] }?.cost, 9 * 9 + 70 * 79 + 5 * 14)
    }

    /// Tasks run concurrently with several threads; each writes its own rows and columns, so the
    /// results equal a one-thread run bit for bit.
    func testAttentionIsIndependentOfTheThreadCount() {
        var rng = Xoshiro256(seed: 111)
        let segments = attentionSegments
        let T = 188, shape = AttentionShape(heads: 6, kvHeads: 3, headDim: 8)
        let q = kernelRandoms(T * shape.qWidth, &rng), k = kernelRandoms(T * shape.kvWidth, &rng)
        let v = kernelRandoms(T * shape.kvWidth, &rng), dOut = kernelRandoms(T * shape.qWidth, &rng)
        let scratchCount = attentionScratchCount(segments)
        func run(threads: Int) -> [[Float]] {
            let saved = Threads.count
            Threads.setCount(threads)
            defer { Threads.setCount(saved) }
            var scratch = [Float](repeating: 0, count: 2 * scratchCount * threads)
            var out = [Float](repeating: 0, count: T * shape.qWidth), lse = [Float](repeating: 0, count: T * 6)
            attentionForward(out: &out, lse: &lse, q: q, k: k, v: v, segments: segments, shape: shape,
                             scratch: &scratch, scratchCount: scratchCount)
            var dq = [Float](repeating: 0, count: T * shape.qWidth), recomputed = dq
            var dk = [Float](repeating: 0, count: T * shape.kvWidth), dv = dk
            attentionBackward(dq: &dq, dk: &dk, dv: &dv, dOut: dOut, out: &recomputed, lse: lse, q: q, k: k, v: v,
                              segments: segments, shape: shape, scratch: &scratch, scratchCount: scratchCount)
            return [out, lse, dq, dk, dv, recomputed]
        }
        let one = run(threads: 1)
        for threads in [2, 3, 5] { XCTAssertEqual(run(threads: threads), one, "\(threads) threads") }
    }

    // MARK: - LM head

    /// With every row in one chunk the backward can take the forward's logits instead of
    /// recomputing them; the gradients are the same bit for bit.
    func testLMHeadBackwardReusesTheForwardLogits() {
        var rng = Xoshiro256(seed: 112)
        let rows = 40, hidden = 16, vocab = 70
        let x = kernelRandoms(rows * hidden, &rng), w = kernelRandoms(vocab * hidden, &rng, scale: 0.4)
        let labels = (0..<rows).map { _ in Int32(rng.next() % UInt64(vocab)) }
        let dlogp = kernelRandoms(rows, &rng)
        var logits = [Float](repeating: .nan, count: rows * vocab)
        var out = HeadOutputs(logps: [], entropy: [], meanLogit: [], argmaxHit: [], logSumP2: [])
        var dxRecomputed = [Float](repeating: 0, count: rows * hidden), dwRecomputed = [Float](repeating: 0, count: vocab * hidden)
        lmHeadForward(x: x, weight: w, labels: labels, rows: rows, hidden: hidden, vocab: vocab, logits: &logits, out: &out)
        logits = logits.map { _ in .nan }  // a recomputing backward must not read these
        lmHeadBackward(dx: &dxRecomputed, dWeight: &dwRecomputed, dlogp: dlogp, x: x, weight: w, labels: labels,
                       rows: rows, hidden: hidden, vocab: vocab, logits: &logits)
        var dx = [Float](repeating: 0, count: rows * hidden), dw = [Float](repeating: 0, count: vocab * hidden)
        lmHeadForward(x: x, weight: w, labels: labels, rows: rows, hidden: hidden, vocab: vocab, logits: &logits, out: &out)
        lmHeadBackward(dx: &dx, dWeight: &dw, dlogp: dlogp, x: x, weight: w, labels: labels,
                       rows: rows, hidden: hidden, vocab: vocab, logits: &logits, logitsFromForward: true)
        XCTAssertEqual(dx, dxRecomputed)
        XCTAssertEqual(dw, dwRecomputed)
        XCTAssertFalse(dx.contains { !$0.isFinite })
    }

    func testLMHeadForwardAndBackward() {
        var rng = Xoshiro256(seed: 110)
        let rows = 150, hidden = 37, vocab = 300
        let chunk = 64  // several chunks run (the default for this vocabulary would be one)
        XCTAssertEqual(headChunkRows(vocab: 4096), 1536)
        XCTAssertEqual(headChunkRows(vocab: 49152), 128)
        XCTAssertEqual(headChunkRows(vocab: 128256), 64)
        let x = kernelRandoms(rows * hidden, &rng)
        let w = kernelRandoms(vocab * hidden, &rng, scale: 0.4)
        let xd = x.map(Double.init), wd = w.map(Double.init)
        // Logits in Double.
        var z = [[Double]](repeating: [], count: rows)
        for r in 0..<rows {
            z[r] = (0..<vocab).map { v in (0..<hidden).reduce(0.0) { $0 + xd[r * hidden + $1] * wd[v * hidden + $1] } }
        }
        // Labels: random, and the argmax on every 4th row so argmaxHit has ones; the first and last
        // vocabulary entries occur too.
        var labels = (0..<rows).map { _ in Int32(rng.next() % UInt64(vocab)) }
        for r in stride(from: 0, to: rows, by: 4) { labels[r] = Int32(z[r].firstIndex(of: z[r].max()!)!) }
        labels[1] = 0; labels[2] = Int32(vocab - 1)

        var logits = [Float](repeating: .nan, count: chunk * vocab)
        var out = HeadOutputs(logps: [], entropy: [], meanLogit: [], argmaxHit: [], logSumP2: [])
        lmHeadForward(x: x, weight: w, labels: labels, rows: rows, hidden: hidden, vocab: vocab, logits: &logits, out: &out,
                      chunkRows: chunk)
        XCTAssertEqual(out.logps.count, rows)
        var hits = 0
        var softmax = [[Double]](repeating: [], count: rows)
        for r in 0..<rows {
            let m = z[r].max()!
            let lse = m + log(z[r].reduce(0) { $0 + exp($1 - m) })
            let p = z[r].map { exp($0 - lse) }
            softmax[r] = p
            let logp = z[r][Int(labels[r])] - lse
            let entropy = -zip(p, z[r]).reduce(0) { $0 + $1.0 * ($1.1 - lse) }
            let mean = z[r].reduce(0, +) / Double(vocab)
            let logSumP2 = log(p.reduce(0) { $0 + $1 * $1 })
            XCTAssertEqual(Double(out.logps[r]), logp, accuracy: 1e-4, "logp[\(r)]")
            XCTAssertEqual(Double(out.entropy[r]), entropy, accuracy: 1e-4, "entropy[\(r)]")
            XCTAssertEqual(Double(out.meanLogit[r]), mean, accuracy: 1e-5, "meanLogit[\(r)]")
            XCTAssertEqual(Double(out.logSumP2[r]), logSumP2, accuracy: 1e-4, "logSumP2[\(r)]")
            // argmax: only where the top two logits are clearly apart (fp32 vs Double rounding).
            let sorted = z[r].sorted(by: >)
            if sorted[0] - sorted[1] > 1e-3 {
                let hit: Float = z[r].firstIndex(of: sorted[0])! == Int(labels[r]) ? 1 : 0
                XCTAssertEqual(out.argmaxHit[r], hit, "argmaxHit[\(r)]")
                hits += Int(hit)
            }
        }
        XCTAssertGreaterThan(hits, 20)

        // Backward: dz = dlogp * (onehot(label) - softmax); dx = dz W (overwritten), dW += dz^T x.
        var dlogp = kernelRandoms(rows, &rng)
        dlogp[3] = 0; dlogp[70] = 0
        var dx = [Float](repeating: 1e6, count: rows * hidden)
        let dwPrefill = kernelRandoms(vocab * hidden, &rng)
        var dw = dwPrefill
        lmHeadBackward(dx: &dx, dWeight: &dw, dlogp: dlogp, x: x, weight: w, labels: labels, rows: rows,
                       hidden: hidden, vocab: vocab, logits: &logits, chunkRows: chunk)
        var dz = [[Double]](repeating: [], count: rows)
        for r in 0..<rows {
            dz[r] = softmax[r].enumerated().map { v, p in Double(dlogp[r]) * ((v == Int(labels[r]) ? 1 : 0) - p) }
        }
        for r in 0..<rows {
            for j in 0..<hidden {
                let e = (0..<vocab).reduce(0.0) { $0 + dz[r][$1] * wd[$1 * hidden + j] }
                XCTAssertEqual(Double(dx[r * hidden + j]), e, accuracy: 1e-5, "dx[\(r), \(j)]")
            }
        }
        for v in 0..<vocab {
            for j in 0..<hidden {
                let e = (0..<rows).reduce(0.0) { $0 + dz[$1][v] * xd[$1 * hidden + j] }
                XCTAssertEqual(Double(dw[v * hidden + j]) - Double(dwPrefill[v * hidden + j]), e, accuracy: 1e-5,
                               "dW[\(v), \(j)]")
            }
        }
        // dx of a row with dlogp 0 is exactly 0.
        for j in 0..<hidden { XCTAssertEqual(dx[3 * hidden + j], 0); XCTAssertEqual(dx[70 * hidden + j], 0) }
    }
}

/// Normal(0, scale^2) + offset samples as Float.
private func kernelRandoms(_ n: Int, _ rng: inout Xoshiro256, scale: Double = 1, offset: Double = 0) -> [Float] {
    (0..<n).map { _ in Float(offset + scale * rng.nextNormal()) }
}

/// Runs `body` with a pointer to `array`'s elements, or nil.
private func withOptionalPointer<R>(_ array: [Int32]?, _ body: (UnsafePointer<Int32>?) -> R) -> R {
    guard let array else { return body(nil) }
    return array.withUnsafeBufferPointer { body($0.baseAddress!) }
}
