#if canImport(Glibc)
import Glibc
#endif

// The LM head evaluated only on the rows asked for, in chunks of rows, so the [rows, vocab] logits
// are never held whole. Per row z (vocab logits), with m = max z and lse = m + log sum exp(z - m):
//   logp      = z[label] - lse
//   entropy   = lse - sum_v p_v z_v
//   meanLogit = mean_v z_v
//   argmaxHit = 1[first argmax == label]
//   logSumP2  = lse(2z) - 2 lse(z) = 2m + log sum exp(2(z - m)) - 2 lse
// Backward of logp only (the other outputs are metrics or no-grad weights):
//   dz_v = dlogp * (1[v == label] - p_v)

/// Rows per head chunk: the chunk's logits are chunk x vocab floats, about 6 Mi floats (24 MiB),
/// at least 64 rows (a multiple of 32). Larger chunks make faster GEMMs: for SmolLM2-135M's
/// vocabulary (128 rows) the head's three products per 64 rows took 80 ms instead of 115 ms with
/// 64-row chunks (OpenBLAS, 2 cores). When all head rows fit in one chunk, the backward reuses the
/// forward's logits instead of recomputing them (the tiny benchmark shape: 1536 rows).
func headChunkRows(vocab: Int) -> Int {
    max(64, (6 << 20) / max(vocab, 1) / 32 * 32)
}

struct HeadRowStats {
    var logp: Float, entropy: Float, meanLogit: Float, argmaxHit: Float, logSumP2: Float
}

/// Statistics of one logits row: SIMD passes for the maximum, the logit sum and the exponentials
/// (8 float lanes folded into Double partial sums every 256 entries).
@inline(__always)
func headRowStats(_ z: UnsafePointer<Float>, vocab n: Int, label: Int) -> HeadRowStats {
    let m = maxOf(z, n)
    // The first maximum, as torch.argmax. The scan is bounded by the row: a row of NaNs has no
    // entry equal to its maximum (maxOf skips NaN and returns -inf), and then no label is a hit.
    var arg = -1
    for v in 0..<n where z[v] == m { arg = v; break }
    var se = 0.0, se2 = 0.0, spz = 0.0, sum = 0.0
    let mv = SIMD8<Float>(repeating: m)
    var v = 0
    while v + 8 <= n {
        var a = SIMD8<Float>(repeating: 0), a2 = a, apz = a, az = a
        let end = min(v + 256, n - n % 8)
        while v < end {
            let x = UnsafeRawPointer(z + v).loadUnaligned(as: SIMD8<Float>.self)
            let d = x - mv
            let e = vexp(d)
            a += e; a2 += e * e; apz += e * d; az += x
            v += 8
        }
        se += Double(a.sum()); se2 += Double(a2.sum()); spz += Double(apz.sum()); sum += Double(az.sum())
    }
    while v < n {
        let d = z[v] - m, e = Double(vexp(SIMD8<Float>(repeating: d))[0])
        se += e; se2 += e * e; spz += e * Double(d); sum += Double(z[v])
        v += 1
    }
    let logSum = log(se)
    let lse = Double(m) + logSum
    // sum_v p_v z_v = m + sum_v p_v (z_v - m)
    let entropy = lse - (Double(m) + spz / se)
    let logSumP2 = log(se2) - 2 * logSum
    return HeadRowStats(logp: Float(Double(z[label]) - lse), entropy: Float(entropy),
                        meanLogit: Float(sum / Double(n)), argmaxHit: arg == label ? 1 : 0,
                        logSumP2: Float(logSumP2))
}

extension HeadOutputs {
    /// Throws `DPOError.numeric` unless every output is finite (NaN or infinite weights, or
    /// logits that overflowed, make them NaN or infinite). `source` names the model in the message.
    func requireFinite(_ source: String) throws {
        for (name, values) in [("log-prob", logps), ("entropy", entropy), ("mean logit", meanLogit),
                               ("log sum p^2", logSumP2)] {
            if let r = values.firstIndex(where: { !$0.isFinite }) {
                throw DPOError.numeric("\(source): the \(name) of head row \(r) is \(values[r]) (the weights or activations are not finite); nothing was changed")
            }
        }
    }
}

/// Forward of the head on normed rows x[rows, hidden] against w[vocab, hidden], `chunkRows` rows
/// at a time (default `headChunkRows`; `logits` holds one chunk). `bf16`: the products with bf16
/// inputs (the softmax statistics stay fp32).
func lmHeadForward(x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                   labels: UnsafePointer<Int32>, rows: Int, hidden: Int, vocab: Int,
                   logits: UnsafeMutablePointer<Float>, out: inout HeadOutputs,
                   chunkRows: Int? = nil, bf16: Bool = false) {
    lmHeadForward(x: x, weight: .fp32(w), labels: labels, rows: rows, hidden: hidden, vocab: vocab, logits: logits,
                  out: &out, chunkRows: chunkRows, bf16: bf16)
}

/// `lmHeadForward` with W wherever it lives (a head kept quantized: FrozenWeight).
func lmHeadForward(x: UnsafePointer<Float>, weight w: FrozenWeight,
                   labels: UnsafePointer<Int32>, rows: Int, hidden: Int, vocab: Int,
                   logits: UnsafeMutablePointer<Float>, out: inout HeadOutputs,
                   chunkRows: Int? = nil, bf16: Bool = false) {
    out = HeadOutputs(logps: .init(repeating: 0, count: rows), entropy: .init(repeating: 0, count: rows),
                      meanLogit: .init(repeating: 0, count: rows), argmaxHit: .init(repeating: 0, count: rows),
                      logSumP2: .init(repeating: 0, count: rows))
    var stats = [HeadRowStats](repeating: HeadRowStats(logp: 0, entropy: 0, meanLogit: 0, argmaxHit: 0, logSumP2: 0), count: rows)
    stats.withUnsafeMutableBufferPointer { st in
        let st = st.baseAddress!
        let chunk = chunkRows ?? headChunkRows(vocab: vocab)
        var r0 = 0
        while r0 < rows {
            let n = min(chunk, rows - r0)
            frozenLinearForward(logits, x + r0 * hidden, weight: w, rows: n, inFeatures: hidden, outFeatures: vocab,
                                accumulate: false, bf16: bf16)
            parallelFor(n) { range in
                for i in range {
                    st[r0 + i] = headRowStats(logits + i * vocab, vocab: vocab, label: Int(labels[r0 + i]))
                }
            }
            r0 += n
        }
    }
    for (i, s) in stats.enumerated() {
        out.logps[i] = s.logp; out.entropy[i] = s.entropy; out.meanLogit[i] = s.meanLogit
        out.argmaxHit[i] = s.argmaxHit; out.logSumP2[i] = s.logSumP2
    }
}

/// Backward of the head given dlogp per row: dx[rows, hidden] = dz * W (overwritten),
/// dW[vocab, hidden] += dz^T * x. Rows with dlogp == 0 still pass through the GEMM (their dz is 0).
/// The logits are recomputed per chunk, unless all rows fit in one chunk and
/// `logitsFromForward` says `logits` still holds what `lmHeadForward` computed for these rows.
func lmHeadBackward(dx: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
                    dlogp: UnsafePointer<Float>, x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                    labels: UnsafePointer<Int32>, rows: Int, hidden: Int, vocab: Int,
                    logits: UnsafeMutablePointer<Float>, chunkRows: Int? = nil, logitsFromForward: Bool = false,
                    bf16: Bool = false) {
    lmHeadBackward(dx: dx, dWeight: dWeight, dlogp: dlogp, x: x, weight: .fp32(w), labels: labels, rows: rows,
                   hidden: hidden, vocab: vocab, logits: logits, chunkRows: chunkRows,
                   logitsFromForward: logitsFromForward, bf16: bf16)
}

/// `lmHeadBackward` with W wherever it lives (FrozenWeight; a quantized W has no `dWeight`).
func lmHeadBackward(dx: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>?,
                    dlogp: UnsafePointer<Float>, x: UnsafePointer<Float>, weight w: FrozenWeight,
                    labels: UnsafePointer<Int32>, rows: Int, hidden: Int, vocab: Int,
                    logits: UnsafeMutablePointer<Float>, chunkRows: Int? = nil, logitsFromForward: Bool = false,
                    bf16: Bool = false) {
    let chunk = chunkRows ?? headChunkRows(vocab: vocab)
    let reuse = logitsFromForward && rows <= chunk
    var r0 = 0
    while r0 < rows {
        let n = min(chunk, rows - r0)
        if !reuse {
            frozenLinearForward(logits, x + r0 * hidden, weight: w, rows: n, inFeatures: hidden, outFeatures: vocab,
                                accumulate: false, bf16: bf16)
        }
        parallelFor(n) { range in
            for i in range {
                let z = logits + i * vocab
                let g = dlogp[r0 + i]
                let s = expShiftInPlace(z, vocab, shift: maxOf(z, vocab))
                scaleInPlace(z, vocab, by: Float(-Double(g) / s))   // dz = -g p
                z[Int(labels[r0 + i])] += g           // + g at the label
            }
        }
        frozenLinearInputGradient(dx + r0 * hidden, logits, weight: w, rows: n, inFeatures: hidden, outFeatures: vocab,
                                  accumulate: false, bf16: bf16)
        if let dWeight {  // nil: a frozen head (LoRA)
            gemm(bf16: bf16, transA: true, m: vocab, n: hidden, k: n, a: logits, lda: vocab,
                  b: x + r0 * hidden, ldb: hidden, beta: 1, c: dWeight, ldc: hidden)
        }
        r0 += n
    }
}
