#if canImport(Glibc)
import Glibc
#endif

// Grouped-query causal attention over packed segments (see PackedTokens). For a segment with
// n tokens and a parent of np tokens, head h (kv group g = h / (heads / kvHeads)) computes
//   S = scale * Q_h [K_parent,g ; K_own,g]^T            [n, np + n], scale = 1 / sqrt(headDim)
//   P = softmax(S) over the visible keys: all parent keys, own keys j <= i
//   O_h = P [V_parent,g ; V_own,g]
// Only lse = log sum exp of each row's visible scores is kept; the backward recomputes P from it:
//   dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ = scale dS K,  dK += scale dS^T Q,  dV += P^T dO
// q, o and their gradients are [tokens, heads * headDim]; k, v and theirs [tokens, kvHeads * headDim].

struct AttentionShape {
    let heads: Int, kvHeads: Int, headDim: Int
    var qWidth: Int { heads * headDim }
    var kvWidth: Int { kvHeads * headDim }
    var scale: Float { 1 / Float(headDim).squareRoot() }
}

/// Scratch floats a segment set needs: one score matrix of the largest segment.
func attentionScratchCount(_ segments: [PackedTokens.Segment]) -> Int {
    var most = 0
    for s in segments {
        let np = s.parent >= 0 ? segments[s.parent].count : 0
        most = max(most, s.count * (np + s.count))
    }
    return most
}

/// Fills row i of `s` [n, np + n] with its softmax over the visible columns [0, np + i], zeros the
/// rest, and stores the row's log-sum-exp.
private func causalSoftmaxRows(_ s: UnsafeMutablePointer<Float>, n: Int, np: Int,
                               lse: UnsafeMutablePointer<Float>, lseStride: Int) {
    let width = np + n
    parallelFor(n, grain: 32) { range in
        for i in range {
            let row = s + i * width
            let visible = np + i + 1
            let m = maxOf(row, visible)
            let sum = expShiftInPlace(row, visible, shift: m)
            scaleInPlace(row, visible, by: Float(1 / sum))
            (row + visible).update(repeating: 0, count: width - visible)
            lse[i * lseStride] = m + Float(log(sum))
        }
    }
}

/// P recomputed from scores and saved lse (masked entries 0).
private func probabilitiesFromLSE(_ s: UnsafeMutablePointer<Float>, n: Int, np: Int,
                                  lse: UnsafePointer<Float>, lseStride: Int) {
    let width = np + n
    parallelFor(n, grain: 32) { range in
        for i in range {
            let row = s + i * width
            let visible = np + i + 1
            expShiftInPlace(row, visible, shift: lse[i * lseStride])
            (row + visible).update(repeating: 0, count: width - visible)
        }
    }
}

/// S = scale * Q [Kp ; Ks]^T for one segment and head, written into `s` [n, np + n].
private func attentionScores(_ s: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>,
                             kParent: UnsafePointer<Float>, kOwn: UnsafePointer<Float>,
                             n: Int, np: Int, shape a: AttentionShape) {
    let width = np + n
    if np > 0 {
        sgemm(transB: true, m: n, n: np, k: a.headDim, alpha: a.scale, a: q, lda: a.qWidth,
              b: kParent, ldb: a.kvWidth, c: s, ldc: width)
    }
    sgemm(transB: true, m: n, n: n, k: a.headDim, alpha: a.scale, a: q, lda: a.qWidth,
          b: kOwn, ldb: a.kvWidth, c: s + np, ldc: width)
}

/// out[tokens, qWidth] = attention(q, k, v); lse[tokens, heads] saved for the backward.
func attentionForward(out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
                      q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                      segments: [PackedTokens.Segment], shape a: AttentionShape,
                      scratch: UnsafeMutablePointer<Float>) {
    let group = a.heads / a.kvHeads
    for seg in segments {
        let n = seg.count, s0 = seg.start
        let np = seg.parent >= 0 ? segments[seg.parent].count : 0
        let p0 = seg.parent >= 0 ? segments[seg.parent].start : 0
        let width = np + n
        for h in 0..<a.heads {
            let g = h / group
            let qh = q + s0 * a.qWidth + h * a.headDim
            let kP = k + p0 * a.kvWidth + g * a.headDim, kS = k + s0 * a.kvWidth + g * a.headDim
            let vP = v + p0 * a.kvWidth + g * a.headDim, vS = v + s0 * a.kvWidth + g * a.headDim
            attentionScores(scratch, q: qh, kParent: kP, kOwn: kS, n: n, np: np, shape: a)
            causalSoftmaxRows(scratch, n: n, np: np, lse: lse + s0 * a.heads + h, lseStride: a.heads)
            let oh = out + s0 * a.qWidth + h * a.headDim
            if np > 0 {
                sgemm(m: n, n: a.headDim, k: np, a: scratch, lda: width, b: vP, ldb: a.kvWidth,
                      c: oh, ldc: a.qWidth)
            }
            sgemm(m: n, n: a.headDim, k: n, a: scratch + np, lda: width, b: vS, ldb: a.kvWidth,
                  beta: np > 0 ? 1 : 0, c: oh, ldc: a.qWidth)
        }
    }
}

/// Backward of `attentionForward`. dq is overwritten; dk and dv are accumulated into (zero them
/// first). `scratch` holds two score matrices.
func attentionBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                       dv: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                       out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
                       q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                       segments: [PackedTokens.Segment], shape a: AttentionShape,
                       scratch: UnsafeMutablePointer<Float>, scratchCount: Int) {
    let group = a.heads / a.kvHeads
    let p = scratch, dp = scratch + scratchCount
    for seg in segments {
        let n = seg.count, s0 = seg.start
        let np = seg.parent >= 0 ? segments[seg.parent].count : 0
        let p0 = seg.parent >= 0 ? segments[seg.parent].start : 0
        let width = np + n
        for h in 0..<a.heads {
            let g = h / group
            let off = h * a.headDim, goff = g * a.headDim
            let qh = q + s0 * a.qWidth + off
            let kP = k + p0 * a.kvWidth + goff, kS = k + s0 * a.kvWidth + goff
            let vP = v + p0 * a.kvWidth + goff, vS = v + s0 * a.kvWidth + goff
            let doh = dOut + s0 * a.qWidth + off, oh = out + s0 * a.qWidth + off
            attentionScores(p, q: qh, kParent: kP, kOwn: kS, n: n, np: np, shape: a)
            probabilitiesFromLSE(p, n: n, np: np, lse: lse + s0 * a.heads + h, lseStride: a.heads)
            // dP = dO [Vp ; Vs]^T
            if np > 0 {
                sgemm(transB: true, m: n, n: np, k: a.headDim, a: doh, lda: a.qWidth, b: vP,
                      ldb: a.kvWidth, c: dp, ldc: width)
            }
            sgemm(transB: true, m: n, n: n, k: a.headDim, a: doh, lda: a.qWidth, b: vS,
                  ldb: a.kvWidth, c: dp + np, ldc: width)
            // dS = P * (dP - D_i), D_i = dO_i . O_i
            parallelFor(n, grain: 32) { range in
                for i in range {
                    var d: Float = 0
                    let dor = doh + i * a.qWidth, or = oh + i * a.qWidth
                    for j in 0..<a.headDim { d += dor[j] * or[j] }
                    let pr = p + i * width, dr = dp + i * width
                    for j in 0..<width { dr[j] = pr[j] * (dr[j] - d) }
                }
            }
            // dQ = scale dS [Kp ; Ks]
            let dqh = dq + s0 * a.qWidth + off
            if np > 0 {
                sgemm(m: n, n: a.headDim, k: np, alpha: a.scale, a: dp, lda: width, b: kP,
                      ldb: a.kvWidth, c: dqh, ldc: a.qWidth)
            }
            sgemm(m: n, n: a.headDim, k: n, alpha: a.scale, a: dp + np, lda: width, b: kS,
                  ldb: a.kvWidth, beta: np > 0 ? 1 : 0, c: dqh, ldc: a.qWidth)
            // dK += scale dS^T Q,  dV += P^T dO  (parent rows receive from every child segment)
            let dkP = dk + p0 * a.kvWidth + goff, dkS = dk + s0 * a.kvWidth + goff
            let dvP = dv + p0 * a.kvWidth + goff, dvS = dv + s0 * a.kvWidth + goff
            if np > 0 {
                sgemm(transA: true, m: np, n: a.headDim, k: n, alpha: a.scale, a: dp, lda: width,
                      b: qh, ldb: a.qWidth, beta: 1, c: dkP, ldc: a.kvWidth)
                sgemm(transA: true, m: np, n: a.headDim, k: n, a: p, lda: width,
                      b: doh, ldb: a.qWidth, beta: 1, c: dvP, ldc: a.kvWidth)
            }
            sgemm(transA: true, m: n, n: a.headDim, k: n, alpha: a.scale, a: dp + np, lda: width,
                  b: qh, ldb: a.qWidth, beta: 1, c: dkS, ldc: a.kvWidth)
            sgemm(transA: true, m: n, n: a.headDim, k: n, a: p + np, lda: width,
                  b: doh, ldb: a.qWidth, beta: 1, c: dvS, ldc: a.kvWidth)
        }
    }
}
