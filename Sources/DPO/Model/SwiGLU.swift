// The Llama MLP's gated activation: h = silu(g) * u, silu(g) = g * sigmoid(g).

@inline(__always)
func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

/// sigmoid on 8 lanes.
@inline(__always)
func vsigmoid(_ x: SIMD8<Float>) -> SIMD8<Float> { 1 / (1 + vexp(-x)) }

@inline(__always)
func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
@inline(__always)
func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self) }

/// h[n] = silu(gate[n]) * up[n]. (h may be gate: each element is read before it is written.)
func swigluForward(_ h: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>,
                   up: UnsafePointer<Float>, count n: Int) {
    parallelFor(n / 8, grain: 512) { range in
        for c in range {
            let i = c * 8
            let g = load8(gate + i)
            store8(g * vsigmoid(g) * load8(up + i), h + i)
        }
    }
    for i in (n - n % 8)..<n { let g = gate[i]; h[i] = g * sigmoid(g) * up[i] }
}

/// Backward of `swigluForward`, given dh:
///   du = dh * silu(g)
///   dg = dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g)))       (d silu / dg)
/// `dGate` may be `dh` (computed in place); nothing else may alias; `h` (optional) receives silu(g) * u recomputed, which
/// the down projection's weight gradient needs.
func swigluBackward(dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>,
                    h: UnsafeMutablePointer<Float>?, dh: UnsafePointer<Float>,
                    gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count n: Int) {
    parallelFor(n / 8, grain: 512) { range in
        for c in range {
            let i = c * 8
            let g = load8(gate + i), u = load8(up + i), d = load8(dh + i)
            let sg = vsigmoid(g)
            let silu = g * sg
            store8(d * silu, dUp + i)
            store8(d * u * sg * (1 + g * (1 - sg)), dGate + i)
            if let h { store8(silu * u, h + i) }
        }
    }
    for i in (n - n % 8)..<n {
        let g = gate[i], u = up[i], d = dh[i]
        let sg = sigmoid(g), silu = g * sg
        dUp[i] = d * silu
        dGate[i] = d * u * sg * (1 + g * (1 - sg))
        if let h { h[i] = silu * u }
    }
}

#if canImport(Glibc)
import Glibc
#endif
