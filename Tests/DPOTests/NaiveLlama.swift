import Foundation
@testable import DPO

/// An independent, deliberately naive Llama forward in Double: plain loops, no BLAS, no chunking,
/// the mask built per token from the segment rules. Used as the reference for kernel tests and for
/// finite differences (in Double, so the differences are accurate).
struct NaiveLlama {
    let config: LlamaConfig
    var params: [Double]          // same flat layout as LlamaModel.parameters
    let layout: ParameterLayout

    init(model: LlamaModel) {
        config = model.config
        layout = model.layout
        params = model.parameters.array.map(Double.init)
    }

    func linear(_ x: [Double], _ wOff: Int, _ bOff: Int, inF: Int, outF: Int) -> [Double] {
        let rows = x.count / inF
        var y = [Double](repeating: 0, count: rows * outF)
        for r in 0..<rows {
            for o in 0..<outF {
                var s = bOff >= 0 ? params[bOff + o] : 0
                for i in 0..<inF { s += x[r * inF + i] * params[wOff + o * inF + i] }
                y[r * outF + o] = s
            }
        }
        return y
    }

    func rmsnorm(_ x: [Double], _ wOff: Int, dim: Int) -> [Double] {
        var y = x
        for r in 0..<(x.count / dim) {
            var ss = 0.0
            for j in 0..<dim { ss += x[r * dim + j] * x[r * dim + j] }
            let rstd = 1 / (ss / Double(dim) + config.rmsNormEps).squareRoot()
            for j in 0..<dim { y[r * dim + j] = params[wOff + j] * x[r * dim + j] * rstd }
        }
        return y
    }

    func rope(_ x: inout [Double], heads: Int, positions: [Int32]) {
        let hd = config.resolvedHeadDim, half = hd / 2
        let invFreq = ropeInverseFrequencies(headDim: hd, theta: config.ropeTheta, scaling: config.ropeScaling)
        for t in 0..<positions.count {
            for h in 0..<heads {
                let base = (t * heads + h) * hd
                for i in 0..<half {
                    let angle = Double(positions[t]) * Double(invFreq[i])
                    let c = cos(angle), s = sin(angle)
                    let x1 = x[base + i], x2 = x[base + i + half]
                    // rotate_half: q * cos + cat(-x2, x1) * sin
                    x[base + i] = x1 * c - x2 * s
                    x[base + i + half] = x2 * c + x1 * s
                }
            }
        }
    }

    /// visible[t] = the key tokens token t attends to.
    static func visibility(_ packed: PackedTokens) -> [[Int]] {
        var vis: [[Int]] = []
        for seg in packed.segments {
            let parent = seg.parent >= 0 ? Array(packed.segments[seg.parent].start..<(packed.segments[seg.parent].start + packed.segments[seg.parent].count)) : []
            for i in 0..<seg.count { vis.append(parent + Array(seg.start...(seg.start + i))) }
        }
        return vis
    }

    /// Final hidden states (after the final norm) of every token, [T, hidden].
    func hidden(_ packed: PackedTokens) -> [Double] {
        let c = config, H = c.hiddenSize, hd = c.resolvedHeadDim, T = packed.count
        let nh = c.numAttentionHeads, nkv = c.numKeyValueHeads, I = c.intermediateSize
        var x = [Double](repeating: 0, count: T * H)
        for t in 0..<T { for j in 0..<H { x[t * H + j] = params[layout.embed + Int(packed.tokens[t]) * H + j] } }
        let vis = NaiveLlama.visibility(packed)
        for l in 0..<c.numHiddenLayers {
            let o = layout.layers[l]
            let xn = rmsnorm(x, o.inputNorm, dim: H)
            var q = linear(xn, o.q, o.qBias, inF: H, outF: nh * hd)
            var k = linear(xn, o.k, o.kBias, inF: H, outF: nkv * hd)
            let v = linear(xn, o.v, o.vBias, inF: H, outF: nkv * hd)
            rope(&q, heads: nh, positions: packed.positions)
            rope(&k, heads: nkv, positions: packed.positions)
            var att = [Double](repeating: 0, count: T * nh * hd)
            for t in 0..<T {
                for h in 0..<nh {
                    let g = h / (nh / nkv)
                    var scores = vis[t].map { j -> Double in
                        var s = 0.0
                        for d in 0..<hd { s += q[(t * nh + h) * hd + d] * k[(j * nkv + g) * hd + d] }
                        return s / Double(hd).squareRoot()
                    }
                    let m = scores.max()!
                    scores = scores.map { exp($0 - m) }
                    let z = scores.reduce(0, +)
                    for (idx, j) in vis[t].enumerated() {
                        for d in 0..<hd { att[(t * nh + h) * hd + d] += scores[idx] / z * v[(j * nkv + g) * hd + d] }
                    }
                }
            }
            let ao = linear(att, o.o, o.oBias, inF: nh * hd, outF: H)
            for i in 0..<x.count { x[i] += ao[i] }
            let xn2 = rmsnorm(x, o.postNorm, dim: H)
            let gate = linear(xn2, o.gate, o.gateBias, inF: H, outF: I)
            let up = linear(xn2, o.up, o.upBias, inF: H, outF: I)
            var hmid = [Double](repeating: 0, count: T * I)
            for i in 0..<hmid.count { hmid[i] = gate[i] / (1 + exp(-gate[i])) * up[i] }
            let down = linear(hmid, o.down, o.downBias, inF: I, outF: H)
            for i in 0..<x.count { x[i] += down[i] }
        }
        return rmsnorm(x, layout.finalNorm, dim: H)
    }

    /// log softmax(z_row)[label] for each head row.
    func logps(_ packed: PackedTokens, _ head: HeadQuery) -> [Double] {
        let H = config.hiddenSize, V = config.vocabSize
        let x = hidden(packed)
        return (0..<head.count).map { i in
            let r = Int(head.rows[i])
            var z = [Double](repeating: 0, count: V)
            for v in 0..<V {
                var s = 0.0
                for j in 0..<H { s += x[r * H + j] * params[layout.lmHead + v * H + j] }
                z[v] = s
            }
            let m = z.max()!
            let lse = m + log(z.reduce(0) { $0 + exp($1 - m) })
            return z[Int(head.labels[i])] - lse
        }
    }

    /// The per-row logits (for head statistics tests).
    func logits(_ packed: PackedTokens, row: Int) -> [Double] {
        let H = config.hiddenSize, V = config.vocabSize
        let x = hidden(packed)
        return (0..<V).map { v in (0..<H).reduce(0.0) { $0 + x[row * H + $1] * params[layout.lmHead + v * H + $1] } }
    }
}
