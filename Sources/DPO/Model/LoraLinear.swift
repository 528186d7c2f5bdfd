// The adapter's share of one LoRA linear layer, on flat buffers. With s the scaling, A [r, in],
// B [out, r] and xd = dropout(x) (xd = x without dropout):
//   forward          y  += s (xd A^T) B^T
//   input gradient   dx += s ((dy B) A) masked like the dropout (nothing else: W's share is the
//                    frozen product of FrozenLinear.swift)
//   gradients        dA += s (dy B)^T xd,   dB += s dy^T (xd A^T)
// Every product goes through `gemm`, so LlamaModel.bf16 applies to them as to the frozen ones.

/// One adapted layer's view of the pass: the matrices, its scaling and the scratch to use.
struct LoraLinear {
    let a: UnsafePointer<Float>, b: UnsafePointer<Float>
    let rank: Int, inFeatures: Int, outFeatures: Int
    let scale: Float
    let scratch: LoraScratch
    /// The dropout of this layer in this pass, nil when off (evaluation, p = 0).
    let dropout: LoraDropout?
    let bf16: Bool

    /// xd: x itself, or the dropped copy in scratch.
    func droppedInput(_ x: UnsafePointer<Float>, rows: Int) -> UnsafePointer<Float> {
        guard let dropout, let buf = scratch.dropped else { return x }
        dropout.apply(buf.pointer, x, count: rows * inFeatures)
        return UnsafePointer(buf.pointer)
    }

    /// u = xd A^T into scratch.u [rows, r].
    func project(_ xd: UnsafePointer<Float>, rows: Int) -> UnsafePointer<Float> {
        gemm(bf16: bf16, transB: true, m: rows, n: rank, k: inFeatures, a: xd, lda: inFeatures, b: a, ldb: inFeatures,
             c: scratch.u.pointer, ldc: rank)
        return UnsafePointer(scratch.u.pointer)
    }

    /// y[rows, out] += s (xd A^T) B^T.
    func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: Int) {
        let u = project(droppedInput(x, rows: rows), rows: rows)
        gemm(bf16: bf16, transB: true, m: rows, n: outFeatures, k: rank, alpha: scale, a: u, lda: rank, b: b, ldb: rank,
             beta: 1, c: y, ldc: outFeatures)
    }

    /// scratch.dyB = dy B [rows, r].
    private func dyTimesB(_ dy: UnsafePointer<Float>, rows: Int) -> UnsafePointer<Float> {
        gemm(bf16: bf16, m: rows, n: rank, k: outFeatures, a: dy, lda: outFeatures, b: b, ldb: rank,
             c: scratch.dyB.pointer, ldc: rank)
        return UnsafePointer(scratch.dyB.pointer)
    }

    /// dx[rows, in] += the adapter's input gradient s (dy B) A (through the dropout's mask).
    func addInputGradient(_ dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, rows: Int) {
        let dyB = dyTimesB(dy, rows: rows)
        if let dropout, let tmp = scratch.inputGrad {
            gemm(bf16: bf16, m: rows, n: inFeatures, k: rank, alpha: scale, a: dyB, lda: rank, b: a, ldb: inFeatures,
                 c: tmp.pointer, ldc: inFeatures)
            dropout.addMasked(dx, tmp.pointer, count: rows * inFeatures)
        } else {
            gemm(bf16: bf16, m: rows, n: inFeatures, k: rank, alpha: scale, a: dyB, lda: rank, b: a, ldb: inFeatures,
                 beta: 1, c: dx, ldc: inFeatures)
        }
    }

    /// dA += s (dy B)^T xd and dB += s dy^T (xd A^T), given the layer's input x and output gradient dy.
    /// `dyBComputed`: scratch.dyB still holds dy B from `addInputGradient` with this dy.
    func addParameterGradients(dA: UnsafeMutablePointer<Float>, dB: UnsafeMutablePointer<Float>,
                               dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, dyBComputed: Bool = false) {
        let xd = droppedInput(x, rows: rows)
        let u = project(xd, rows: rows)
        gemm(bf16: bf16, transA: true, m: outFeatures, n: rank, k: rows, alpha: scale, a: dy, lda: outFeatures,
             b: u, ldb: rank, beta: 1, c: dB, ldc: rank)
        let dyB = dyBComputed ? UnsafePointer(scratch.dyB.pointer) : dyTimesB(dy, rows: rows)
        gemm(bf16: bf16, transA: true, m: rank, n: inFeatures, k: rows, alpha: scale, a: dyB, lda: rank,
             b: xd, ldb: inFeatures, beta: 1, c: dA, ldc: inFeatures)
    }
}

/// Inverted dropout with a mask that is a pure function of (key, element index), so the backward
/// regenerates the forward's mask instead of storing it: element i is kept when the top 24 bits
/// of SplitMix64(key + i) are >= p 2^24, and a kept value is divided by 1 - p (PyTorch's
/// `nn.Dropout` scaling; its random stream is not reproduced).
struct LoraDropout {
    let key: UInt64
    let threshold: UInt64
    let keepScale: Float

    init(p: Double, key: UInt64) {
        self.key = key
        threshold = UInt64((p * 16_777_216).rounded())
        keepScale = Float(1 / (1 - p))
    }

    @inline(__always) func keeps(_ i: Int) -> Bool {
        var z = key &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return (z >> 40) >= threshold
    }

    /// dst = dropout(src).
    func apply(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, count: Int) {
        parallelFor(count, grain: 16384) { range in
            for i in range { dst[i] = keeps(i) ? src[i] * keepScale : 0 }
        }
    }

    /// dst += the dropout's backward of g (g scaled where kept, 0 where dropped).
    func addMasked(_ dst: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, count: Int) {
        parallelFor(count, grain: 16384) { range in
            for i in range where keeps(i) { dst[i] += g[i] * keepScale }
        }
    }

    /// The key of one layer's mask in one training forward.
    static func key(seed: UInt64, call: UInt64, layer: Int, module: LoraModule) -> UInt64 {
        var z = seed ^ (call &* 0xD6E8_FEB8_6659_FD93)
        z ^= UInt64(layer &* 8 &+ module.rawValue) &* 0xA076_1D64_78BD_642F
        z = (z ^ (z >> 32)) &* 0xE703_7ED1_A0B4_28DB
        return z ^ (z >> 29)
    }
}
