// Dequantization of ggml tensor blocks to fp32, bit for bit as gguf-py's `gguf.quants.dequantize`
// (and ggml's `dequantize_row_*` in ggml-quants.c) compute it: the same fp16 scale conversion and
// the same fp32 operations in the same order (a product, then a separate sum or difference, never
// fused). Block layouts (ggml-common.h), with fp16 `d`/`m`/`dmin` scales, QK_K = 256:
//
//   Q4_0  d, qs[16]                 x = d * (q - 8),        q = 4-bit nibble
//   Q4_1  d, m, qs[16]              x = d * q + m
//   Q5_0  d, qh[4], qs[16]          x = d * (q - 16),       q = nibble | high bit << 4
//   Q5_1  d, m, qh[4], qs[16]       x = d * q + m
//   Q8_0  d, qs[32] (int8)          x = q * d
//   Q2_K  scales[16], qs[64], d, dmin           x = (d * sc) * q - (dmin * mn), 16 groups of 16
//   Q3_K  hmask[32], qs[64], scales[12], d      x = (d * (sc - 32)) * (q - 4 * !hbit)
//   Q4_K  d, dmin, scales[12], qs[128]          x = (d * sc) * q - (dmin * mn), 8 groups of 32
//   Q5_K  d, dmin, scales[12], qh[32], qs[128]  as Q4_K with a fifth bit
//   Q6_K  ql[128], qh[64], scales[16] (int8), d x = (d * sc) * (q - 32), 16 groups of 16
//
// Within a 32-element block the low nibbles hold elements 0..15 and the high nibbles 16..31.

/// Dequantizes `blocks` blocks of `type` at `src` into `blocks * type.blockSize` floats at `dst`.
/// `type` must be one of `GGMLType.isReadableAsFloat` (checked by the caller).
func ggmlDequantize(_ type: GGMLType, _ src: UnsafeRawPointer, blocks: Int, into dst: UnsafeMutablePointer<Float>) {
    let x = src.assumingMemoryBound(to: UInt8.self)
    let kernel: (UnsafePointer<UInt8>, UnsafeMutablePointer<Float>) -> Void
    switch type {
    case .F32:
        UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: 4 * blocks)
        return
    case .F16:
        for i in 0..<blocks { dst[i] = half(x + 2 * i) }
        return
    case .BF16:
        for i in 0..<blocks { dst[i] = Float(bitPattern: UInt32(x[2 * i]) << 16 | UInt32(x[2 * i + 1]) << 24) }
        return
    case .Q4_0: kernel = dequantizeQ4_0
    case .Q4_1: kernel = dequantizeQ4_1
    case .Q5_0: kernel = dequantizeQ5_0
    case .Q5_1: kernel = dequantizeQ5_1
    case .Q8_0: kernel = dequantizeQ8_0
    case .Q2_K: kernel = dequantizeQ2_K
    case .Q3_K: kernel = dequantizeQ3_K
    case .Q4_K: kernel = dequantizeQ4_K
    case .Q5_K: kernel = dequantizeQ5_K
    case .Q6_K: kernel = dequantizeQ6_K
    default: return  // unreachable: `readFloats` refuses other types first
    }
    let blockBytes = type.bytesPerBlock, n = type.blockSize
    for b in 0..<blocks { kernel(x + b * blockBytes, dst + b * n) }
}

/// The fp16 value at `p` (little-endian) as Float, exactly.
@inline(__always) private func half(_ p: UnsafePointer<UInt8>) -> Float {
    Float(bitPattern: floatBits(fromF16: UInt16(p[0]) | UInt16(p[1]) << 8))
}

/// The 4-bit value of element j (0..<32) of a 16-byte nibble array.
@inline(__always) private func nibble(_ qs: UnsafePointer<UInt8>, _ j: Int) -> UInt8 {
    j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4
}

/// The fifth bit of element j from a 32-bit little-endian mask.
@inline(__always) private func highBit(_ qh: UnsafePointer<UInt8>, _ j: Int) -> UInt8 {
    (qh[j >> 3] >> UInt8(j & 7)) & 1
}

private func dequantizeQ4_0(_ x: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
    let d = half(x), qs = x + 2
    for j in 0..<32 { y[j] = d * Float(Int(nibble(qs, j)) - 8) }
}

private func dequantizeQ4_1(_ x: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
    let d = half(x), m = half(x + 2), qs = x + 4
    for j in 0..<32 { y[j] = d * Float(nibble(qs, j)) + m }
}

private func dequantizeQ5_0(_ x: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
    let d = half(x), qh = x + 2, qs = x + 6
    for j in 0..<32 { y[j] = d * Float(Int(nibble(qs, j) | highBit(qh, j) << 4) - 16) }
}

private func dequantizeQ5_1(_ x: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
    let d = half(x), m = half(x + 2), qh = x + 4, qs = x + 8
    for j in 0..<32 { y[j] = d * Float(nibble(qs, j) | highBit(qh, j) << 4) + m }
}

private func dequantizeQ8_0(_ x: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
    let d = half(x)
    for j in 0..<32 { y[j] = Float(Int8(bitPattern: x[2 + j])) * d }
}

/// Q2_K: element e = (half * 4 + s) * 32 + l holds bits 2s..2s+1 of qs[half * 32 + l];
/// group e / 16 has scale nibble sc & 0xF and min nibble sc >> 4.
private func dequantizeQ2_K(_ x: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
    let scales = x, qs = x + 16, d = half(x + 80), dmin = half(x + 82)
    for g in 0..<16 {
        let dl = d * Float(scales[g] & 0x0F), ml = dmin * Float(scales[g] >> 4)
        for i in 0..<16 {
            let e = g * 16 + i
            let (half, s, l) = (e >> 7, (e >> 5) & 3, e & 31)
            let q = (qs[half * 32 + l] >> UInt8(2 * s)) & 3
            y[e] = dl * Float(q) - ml
        }
    }
}

/// Q3_K: 16 six-bit scales (low nibbles in bytes 0..7, high pairs in bytes 8..11, minus 32);
/// element e = (half * 4 + s) * 32 + l: two low bits from qs[half * 32 + l] >> 2s, and 4 is
/// subtracted when bit (e / 32) of hmask[l] is clear.
private func dequantizeQ3_K(_ x: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
    let hmask = x, qs = x + 32, sc = x + 96, d = half(x + 108)
    for g in 0..<16 {
        let low = (sc[g & 7] >> UInt8(4 * (g >> 3))) & 0x0F
        let high = (sc[8 + (g & 3)] >> UInt8(2 * (g >> 2))) & 0x03
        let dl = d * Float(Int(low | high << 4) - 32)
        for i in 0..<16 {
            let e = g * 16 + i
            let (half, s, l) = (e >> 7, (e >> 5) & 3, e & 31)
            let q = Int((qs[half * 32 + l] >> UInt8(2 * s)) & 3)
            let h = Int((hmask[l] >> UInt8(e >> 5)) & 1)
            y[e] = dl * Float(q - ((h ^ 1) << 2))
        }
    }
}

/// The 6-bit scale and min of sub-block j (0..<8) of Q4_K/Q5_K (`get_scale_min_k4`).
@inline(__always) private func scaleMinK4(_ s: UnsafePointer<UInt8>, _ j: Int) -> (UInt8, UInt8) {
    if j < 4 { return (s[j] & 0x3F, s[j + 4] & 0x3F) }
    return ((s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30), (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30))
}

/// Q4_K: sub-block j = 2c + h (32 elements) holds nibble h of qs[c * 32 + l].
private func dequantizeQ4_K(_ x: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
    let d = half(x), dmin = half(x + 2), scales = x + 4, qs = x + 16
    for j in 0..<8 {
        let (sc, mn) = scaleMinK4(scales, j)
        let d1 = d * Float(sc), m1 = dmin * Float(mn)
        let q = qs + (j >> 1) * 32, shift = UInt8(4 * (j & 1))
        for l in 0..<32 { y[j * 32 + l] = d1 * Float((q[l] >> shift) & 0x0F) - m1 }
    }
}

/// Q5_K: as Q4_K, with bit j of qh[l] as the fifth bit of element j * 32 + l.
private func dequantizeQ5_K(_ x: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
    let d = half(x), dmin = half(x + 2), scales = x + 4, qh = x + 16, qs = x + 48
    for j in 0..<8 {
        let (sc, mn) = scaleMinK4(scales, j)
        let d1 = d * Float(sc), m1 = dmin * Float(mn)
        let q = qs + (j >> 1) * 32, shift = UInt8(4 * (j & 1))
        for l in 0..<32 {
            let v = ((q[l] >> shift) & 0x0F) | (((qh[l] >> UInt8(j)) & 1) << 4)
            y[j * 32 + l] = d1 * Float(v) - m1
        }
    }
}

/// Q6_K: in each half of 128 elements, element e' takes nibble (e' / 64) of ql[e' % 64] and bits
/// 2(e' / 32).. of qh[e' % 32]; group e / 16 has an int8 scale.
private func dequantizeQ6_K(_ x: UnsafePointer<UInt8>, _ y: UnsafeMutablePointer<Float>) {
    let ql = x, qh = x + 128, scales = x + 192, d = half(x + 208)
    for g in 0..<16 {
        let dl = d * Float(Int8(bitPattern: scales[g]))
        for i in 0..<16 {
            let e = g * 16 + i
            let (half, r) = (e >> 7, e & 127)
            let low = (ql[half * 64 + (r & 63)] >> UInt8(4 * (r >> 6))) & 0x0F
            let high = (qh[half * 32 + (r & 31)] >> UInt8(2 * (r >> 5))) & 0x03
            y[e] = dl * Float(Int(low | high << 4) - 32)
        }
    }
}
