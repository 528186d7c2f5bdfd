// Dequantization of ggml tensor blocks to fp32, bit for bit as ggml's `dequantize_row_*`
// (ggml-quants.c) and gguf-py's `gguf.quants.dequantize` compute it.

/// Dequantizes `blocks` blocks of `type` at `src` into `blocks * type.blockSize` floats at `dst`.
/// `type` must be one of `GGMLType.isReadableAsFloat` (checked by the caller).
func ggmlDequantize(_ type: GGMLType, _ src: UnsafeRawPointer, blocks: Int, into dst: UnsafeMutablePointer<Float>) {
    switch type {
    case .F32:
        UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: 4 * blocks)
    case .F16:
        for i in 0..<blocks { dst[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    case .BF16:
        for i in 0..<blocks { dst[i] = Float(bitPattern: floatBits(fromBF16: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
    default:
        break  // unreachable: `readFloats` refuses other types first
    }
}

/// An IEEE binary16 value as Float (exact).
@inline(__always) func halfToFloat(_ h: UInt16) -> Float { Float(bitPattern: floatBits(fromF16: h)) }
