// exp on 8 floats at once (Cephes' expf polynomial; max relative error ~2e-7, like expf):
//   exp(x) = 2^k exp(r),  k = round(x / ln 2),  r = x - k ln 2 in [-ln2/2, ln2/2]
// exp(r) is a degree-6 polynomial; 2^k is built in the float's exponent bits. Inputs are clamped
// to [-87.3, 88.7] (results below ~1e-38 flush towards 0; exp(-inf) is 0 after the clamp's
// underflow path below).

@inline(__always)
func vexp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let lo = SIMD8<Float>(repeating: -87.3), hi = SIMD8<Float>(repeating: 88.7)
    let underflow = x .< lo
    var c = x.replacing(with: lo, where: underflow)
    c = c.replacing(with: hi, where: c .> hi)
    // Round to the nearest integer with the 1.5 * 2^23 trick (the float's low mantissa bits then
    // hold k), which stays in vector registers where a generic float-to-int conversion would not.
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let t = c * 1.44269504088896341 + magic
    let k = t - magic
    var r = c - k * 0.693359375
    r = r - k * -2.12194440e-4
    var p = SIMD8<Float>(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let y = p * (r * r) + r + 1
    // 2^k: (k + 127) << 23 as float bits; bits(t) = 0x4B400000 + k.
    let bits = unsafeBitCast(t, to: SIMD8<UInt32>.self) &- 0x4B40_0000 &+ 127
    let scale = unsafeBitCast(bits &<< 23, to: SIMD8<Float>.self)
    return (y * scale).replacing(with: 0, where: underflow)
}

/// In place: x[i] = exp(x[i] - shift) for i < n; returns the sum of the results (8 float lanes,
/// folded into a Double every 256 elements).
@inline(__always)
@discardableResult
func expShiftInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Double {
    let s = SIMD8<Float>(repeating: shift)
    var total = 0.0
    var i = 0
    while i + 8 <= n {
        var acc = SIMD8<Float>(repeating: 0)
        let end = min(i + 256, n - n % 8)
        while i < end {
            let e = vexp(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) - s)
            UnsafeMutableRawPointer(x + i).storeBytes(of: e, as: SIMD8<Float>.self)
            acc += e
            i += 8
        }
        total += Double(acc.sum())
    }
    while i < n {
        let e = vexp(SIMD8<Float>(repeating: x[i] - shift))[0]
        x[i] = e
        total += Double(e)
        i += 1
    }
    return total
}

/// Multiplies n floats by s.
@inline(__always)
func scaleInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int, by s: Float) {
    var i = 0
    let v = SIMD8<Float>(repeating: s)
    while i + 8 <= n {
        let y = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) * v
        UnsafeMutableRawPointer(x + i).storeBytes(of: y, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { x[i] *= s; i += 1 }
}

/// The largest of n floats (n >= 1).
@inline(__always)
func maxOf(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var m = SIMD8<Float>(repeating: -.infinity)
    var i = 0
    while i + 8 <= n {
        let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
        m = m.replacing(with: v, where: v .> m)
        i += 8
    }
    var best = m.max()
    while i < n { best = max(best, x[i]); i += 1 }
    return best
}
