// The Llama MLP's gated activation: h = silu(g) * u, silu(g) = g * sigmoid(g).

@inline(__always)
func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

/// h[n] = silu(gate[n]) * up[n].
func swigluForward(_ h: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>,
                   up: UnsafePointer<Float>, count n: Int) {
    parallelFor(n, grain: 4096) { range in
        for i in range {
            let g = gate[i]
            h[i] = g * sigmoid(g) * up[i]
        }
    }
}

/// Backward of `swigluForward`, given dh:
///   du = dh * silu(g)
///   dg = dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g)))       (d silu / dg)
/// `dGate` and `dUp` may alias nothing else; `h` (optional) receives silu(g) * u recomputed, which
/// the down projection's weight gradient needs.
func swigluBackward(dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>,
                    h: UnsafeMutablePointer<Float>?, dh: UnsafePointer<Float>,
                    gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count n: Int) {
    parallelFor(n, grain: 4096) { range in
        for i in range {
            let g = gate[i], u = up[i], d = dh[i]
            let sg = sigmoid(g)
            let silu = g * sg
            dUp[i] = d * silu
            dGate[i] = d * u * sg * (1 + g * (1 - sg))
            if let h { h[i] = silu * u }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
