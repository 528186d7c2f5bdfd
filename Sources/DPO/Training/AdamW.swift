#if canImport(Glibc)
import Glibc
#endif

/// AdamW over flat buffers with PyTorch's `torch.optim.AdamW` semantics (decoupled weight decay):
///   p <- p - lr * wd * p
///   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
///   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// Weight decay skips biases and norm weights, as transformers' Trainer does
/// (`get_decay_parameter_names`).
final class AdamW {
    let m: FloatBuffer, v: FloatBuffer
    /// Optimizer steps taken (t of the bias corrections after the next step is steps + 1).
    var steps = 0
    /// Ranges of the flat buffer and whether weight decay applies to them.
    let decayRanges: [(range: Range<Int>, decay: Bool)]

    init(layout: ParameterLayout) {
        m = FloatBuffer(count: layout.count)
        v = FloatBuffer(count: layout.count)
        decayRanges = layout.tensors.map { spec in
            let name = spec.name.lowercased()
            let noDecay = name.contains("bias") || name.contains("layernorm") || name.contains("rmsnorm")
                || name.hasPrefix("norm.") || name.contains(".norm.") || name.hasSuffix(".norm")
                || name.contains("_norm.") || name.hasSuffix("_norm")
            return (spec.offset..<(spec.offset + spec.count), !noDecay)
        }
    }

    func step(parameters p: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>,
              lr: Double, config c: OptimizerConfig) {
        steps += 1
        let t = Double(steps)
        let b1 = Float(c.adamBeta1), b2 = Float(c.adamBeta2), eps = Float(c.adamEpsilon)
        let stepSize = Float(lr / (1 - pow(c.adamBeta1, t)))
        let bc2Sqrt = Float((1 - pow(c.adamBeta2, t)).squareRoot())
        let mp = m.pointer, vp = v.pointer
        for (range, decay) in decayRanges {
            let shrink = decay ? Float(1 - lr * c.weightDecay) : 1
            parallelFor(range.count, grain: 16384) { chunk in
                for j in chunk {
                    let i = range.lowerBound + j
                    let gi = g[i]
                    let pi = p[i] * shrink
                    let mi = b1 * mp[i] + (1 - b1) * gi
                    let vi = b2 * vp[i] + (1 - b2) * gi * gi
                    mp[i] = mi; vp[i] = vi
                    p[i] = pi - stepSize * mi / (vi.squareRoot() / bc2Sqrt + eps)
                }
            }
        }
    }
}

/// Global L2 norm of a flat buffer (Double partial sums per thread).
func globalNorm(_ g: UnsafePointer<Float>, count: Int) -> Double {
    let threads = max(1, min(Threads.count, count / 65536))
    var partial = [Double](repeating: 0, count: threads)
    partial.withUnsafeMutableBufferPointer { part in
        let part = part.baseAddress!
        parallelFor(threads) { chunks in
            for c in chunks {
                let lo = count * c / threads, hi = count * (c + 1) / threads
                var s: Double = 0
                var j = lo
                while j < hi {
                    let end = min(j + 1024, hi)
                    var f: Float = 0
                    while j < end { f += g[j] * g[j]; j += 1 }
                    s += Double(f)
                }
                part[c] = s
            }
        }
    }
    return partial.reduce(0, +).squareRoot()
}

/// Multiplies a flat buffer by a scalar.
func scaleBuffer(_ g: UnsafeMutablePointer<Float>, count: Int, by s: Float) {
    parallelFor(count, grain: 65536) { range in
        for i in range { g[i] *= s }
    }
}
