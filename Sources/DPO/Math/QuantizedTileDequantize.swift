// SIMD dequantization of the types most GGUF linear weights use (Q4_0, Q4_1, Q8_0, Q6_K; Q4_K's
// scalar kernel is already vectorized by the compiler), for the tiles of QuantizedMatrix's
// products, where dequantization is the cost that sgemm does not have: with a few tokens (T = 1
// to 64) it is a large part of the product's time. On the development machine the scalar kernels
// of GGUFDequantize.swift run at 0.8-2.5 G floats/s (Q6_K 0.8, Q4_1 about 2), these at 4.3-6 (the
// benchmark in QuantizedMatrixTests prints the rate of every type). An F16 kernel written with
// SIMD16<UInt32> bit operations was no faster than the scalar one (1.3-1.9 G/s) and is not here.
//
// Each computes exactly what its scalar kernel computes (GGUFDequantize.swift, ggml's
// `dequantize_row_*`), element for element: the same fp16 scales, the integer value converted to
// Float exactly, then the same one multiply and one add, never fused (Swift's SIMD `*` and `+`
// are separate IEEE operations). QuantizedMatrixTests checks them bit for bit against the scalar
// kernels on random blocks. Other types use `ggmlDequantize`.

/// Dequantizes `blocks` blocks of `type` at `src` into `dst`: `ggmlDequantize`, with the SIMD
/// kernels below for Q4_0, Q4_1, Q8_0 and Q6_K.
@inline(__always)
func dequantizeBlocks(_ type: GGMLType, _ src: UnsafeRawPointer, blocks: Int, into dst: UnsafeMutablePointer<Float>) {
    switch type {
    case .Q4_0: for b in 0..<blocks { dequantizeQ4_0x16(src + b * 18, dst + b * 32) }
    case .Q4_1: for b in 0..<blocks { dequantizeQ4_1x16(src + b * 20, dst + b * 32) }
    case .Q8_0: for b in 0..<blocks { dequantizeQ8_0x16(src + b * 34, dst + b * 32) }
    case .Q6_K: for b in 0..<blocks { dequantizeQ6_Kx16(src + b * 210, dst + b * 256) }
    default: ggmlDequantize(type, src, blocks: blocks, into: dst)
    }
}

/// The little-endian fp16 at `p` as Float, exactly.
@inline(__always) private func fp16(_ p: UnsafeRawPointer) -> Float {
    Float(bitPattern: floatBits(fromF16: UInt16(p.load(as: UInt8.self)) | UInt16(p.load(fromByteOffset: 1, as: UInt8.self)) << 8))
}

/// The 16 bytes at `p` as two halves of 16 elements: low nibbles (elements 0..15) and high
/// nibbles (16..31), each converted to Float exactly.
@inline(__always) private func nibbles(_ p: UnsafeRawPointer) -> (SIMD16<Float>, SIMD16<Float>) {
    let q = p.loadUnaligned(as: SIMD16<UInt8>.self)
    return (SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q & 0x0F)),
            SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q &>> 4)))
}

@inline(__always) private func store(_ v: SIMD16<Float>, _ y: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(y).storeBytes(of: v, as: SIMD16<Float>.self)
}

/// Q4_0: d, qs[16]; x = d * (q - 8).
@inline(__always) private func dequantizeQ4_0x16(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = SIMD16<Float>(repeating: fp16(x)), (lo, hi) = nibbles(x + 2)
    let eight = SIMD16<Float>(repeating: 8)
    // q - 8 is an integer of at most 4 bits: exact in Float, as the scalar kernel's Float(q - 8).
    store(d * (lo - eight), y)
    store(d * (hi - eight), y + 16)
}

/// Q4_1: d, m, qs[16]; x = d * q + m.
@inline(__always) private func dequantizeQ4_1x16(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = SIMD16<Float>(repeating: fp16(x)), m = SIMD16<Float>(repeating: fp16(x + 2))
    let (lo, hi) = nibbles(x + 4)
    store(d * lo + m, y)
    store(d * hi + m, y + 16)
}

/// Q8_0: d, qs[32] (int8); x = q * d.
@inline(__always) private func dequantizeQ8_0x16(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = SIMD16<Float>(repeating: fp16(x))
    let a = (x + 2).loadUnaligned(as: SIMD16<Int8>.self), b = (x + 18).loadUnaligned(as: SIMD16<Int8>.self)
    store(SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: a)) * d, y)
    store(SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: b)) * d, y + 16)
}

/// Q6_K: ql[128], qh[64], scales[16] (int8), d. In each half of 128 elements, element e' takes
/// nibble e' / 64 of ql[e' % 64] and bits 2 (e' / 32) of qh[e' % 32]; x = (d * sc) * (q - 32)
/// with the scale of its group of 16. Here 32 elements at a time: chunk c of a half reads
/// ql[(c % 2) * 32 ..< +32] and all 32 qh bytes of the half.
@inline(__always) private func dequantizeQ6_Kx16(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = fp16(x + 208)
    let thirtyTwo = SIMD16<Int32>(repeating: 32)
    for half in 0..<2 {
        let ql = x + half * 64, qh = x + 128 + half * 32
        let h0 = qh.loadUnaligned(as: SIMD16<UInt8>.self), h1 = (qh + 16).loadUnaligned(as: SIMD16<UInt8>.self)
        for c in 0..<4 {
            let lowShift = UInt8(4 * (c >> 1)), highShift = UInt8(2 * c)
            // Elements e .. e + 15 from 16 ql bytes and the 16 qh bytes at the same offset.
            @inline(__always) func sixteen(_ low: SIMD16<UInt8>, _ high: SIMD16<UInt8>, _ e: Int) {
                let q = ((low &>> lowShift) & 0x0F) | (((high &>> highShift) & 0x03) &<< 4)
                let sc = Int8(bitPattern: x.load(fromByteOffset: 192 + e / 16, as: UInt8.self))
                let dl = SIMD16<Float>(repeating: d * Float(sc))
                store(dl * SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q) &- thirtyTwo), y + e)
            }
            let l = ql + (c & 1) * 32, e = half * 128 + c * 32
            sixteen(l.loadUnaligned(as: SIMD16<UInt8>.self), h0, e)
            sixteen((l + 16).loadUnaligned(as: SIMD16<UInt8>.self), h1, e + 16)
        }
    }
}
