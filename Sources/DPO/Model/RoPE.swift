#if canImport(Glibc)
import Glibc
#endif

// Rotary position embedding in Hugging Face's rotate-half layout:
//   for i < d/2:  out[i]       = x[i] cos(p f_i) - x[i + d/2] sin(p f_i)
//                 out[i + d/2] = x[i + d/2] cos(p f_i) + x[i] sin(p f_i)
// with inverse frequencies f_i = theta^(-2i/d), optionally rescaled by the llama3 rule.

/// Inverse frequencies as transformers computes them (`_compute_default_rope_parameters` and
/// `_compute_llama3_parameters`), in fp32.
func ropeInverseFrequencies(headDim: Int, theta: Double, scaling: RopeScaling) -> [Float] {
    let half = headDim / 2
    var invFreq = [Float](repeating: 0, count: half)
    for i in 0..<half {
        // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in fp32.
        let exponent = Float(2 * i) / Float(headDim)
        invFreq[i] = 1 / Float(pow(theta, Double(exponent)))
    }
    guard case .llama3(let factor, let lowFreqFactor, let highFreqFactor, let originalMax) = scaling
    else { return invFreq }
    // transformers' llama3 rule: long wavelengths are divided by `factor`, short ones are kept,
    // the band between is interpolated smoothly.
    let oldContext = Float(originalMax)
    let lowFreqWavelen = oldContext / Float(lowFreqFactor)
    let highFreqWavelen = oldContext / Float(highFreqFactor)
    for i in 0..<half {
        let f = invFreq[i]
        // 2 pi rounded to the nearest float, as torch converts Python's math.pi (Float.pi rounds down).
        let wavelen = Float(2 * Double.pi) / f
        var scaled = wavelen > lowFreqWavelen ? f / Float(factor) : f
        let isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen)
        if isMedium {
            let smooth = (oldContext / wavelen - Float(lowFreqFactor))
                / Float(highFreqFactor - lowFreqFactor)
            scaled = (1 - smooth) * scaled / Float(factor) + smooth * scaled
        }
        invFreq[i] = scaled
    }
    return invFreq
}

/// cos/sin tables [tokens, d/2] for the given positions (angle = fp32 product p * f, as torch).
func ropeTables(cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>,
                positions: UnsafePointer<Int32>, tokens: Int, invFreq: [Float]) {
    let half = invFreq.count
    invFreq.withUnsafeBufferPointer { f in
        parallelFor(tokens, grain: 64) { range in
            for t in range {
                let p = Float(positions[t])
                for i in 0..<half {
                    let angle = Double(p * f[i])
                    cos[t * half + i] = Float(Glibc.cos(angle))
                    sin[t * half + i] = Float(Glibc.sin(angle))
                }
            }
        }
    }
}

/// Rotates x[tokens, heads * headDim] in place. `inverse` applies the transpose rotation, which is
/// the backward of the forward rotation (dx = R^T dy).
func ropeApply(_ x: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>,
               sin: UnsafePointer<Float>, tokens: Int, heads: Int, headDim: Int,
               inverse: Bool = false) {
    let half = headDim / 2
    let sign: Float = inverse ? -1 : 1
    parallelFor(tokens, grain: 16) { range in
        for t in range {
            let c = cos + t * half, s = sin + t * half
            for h in 0..<heads {
                let v = x + (t * heads + h) * headDim
                for i in 0..<half {
                    let x1 = v[i], x2 = v[i + half]
                    let si = sign * s[i]
                    v[i] = x1 * c[i] - x2 * si
                    v[i + half] = x2 * c[i] + x1 * si
                }
            }
        }
    }
}
