/// The tensor element types of ggml (`enum ggml_type` in ggml.h, `GGMLQuantizationType` in
/// gguf-py), every code ever assigned, so that an error can name a type swift-dpo cannot read
/// (e.g. "IQ2_XXS"). Quantized types store `blockSize` elements in `bytesPerBlock` bytes.
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3
    /// Removed from ggml (codes 4 and 5 are no longer used); known only to name them.
    case Q4_2 = 4, Q4_3 = 5
    case Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9
    case Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15
    case IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23
    case I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30
    /// Removed repacked layouts (31...33, 36...38); known only to name them.
    case Q4_0_4_4 = 31, Q4_0_4_8 = 32, Q4_0_8_8 = 33
    case TQ1_0 = 34, TQ2_0 = 35
    case IQ4_NL_4_4 = 36, IQ4_NL_4_8 = 37, IQ4_NL_8_8 = 38
    case MXFP4 = 39, NVFP4 = 40, Q1_0 = 41

    /// The name ggml and gguf-py use, e.g. "Q4_1".
    public var name: String { String(describing: self) }

    /// (elements per block, bytes per block) as in gguf-py's `GGML_QUANT_SIZES`; nil for the
    /// removed codes whose layout no current file uses.
    public var blockLayout: (blockSize: Int, bytesPerBlock: Int)? {
        let qk = 256  // QK_K, the super-block of the k-quants
        switch self {
        case .F32, .I32: return (1, 4)
        case .F16, .BF16, .I16: return (1, 2)
        case .I8: return (1, 1)
        case .I64, .F64: return (1, 8)
        case .Q4_0: return (32, 2 + 16)
        case .Q4_1: return (32, 2 + 2 + 16)
        case .Q5_0: return (32, 2 + 4 + 16)
        case .Q5_1: return (32, 2 + 2 + 4 + 16)
        case .Q8_0: return (32, 2 + 32)
        case .Q8_1: return (32, 4 + 4 + 32)
        case .Q2_K: return (qk, 2 + 2 + qk / 16 + qk / 4)
        case .Q3_K: return (qk, 2 + qk / 4 + qk / 8 + 12)
        case .Q4_K: return (qk, 2 + 2 + qk / 2 + 12)
        case .Q5_K: return (qk, 2 + 2 + qk / 2 + qk / 8 + 12)
        case .Q6_K: return (qk, 2 + qk / 2 + qk / 4 + qk / 16)
        case .Q8_K: return (qk, 4 + qk + qk / 8)
        case .IQ2_XXS: return (qk, 2 + qk / 4)
        case .IQ2_XS: return (qk, 2 + qk / 4 + qk / 32)
        case .IQ3_XXS: return (qk, 2 + qk / 4 + qk / 8)
        case .IQ1_S: return (qk, 2 + qk / 8 + qk / 16)
        case .IQ4_NL: return (32, 2 + 16)
        case .IQ3_S: return (qk, 2 + qk / 4 + qk / 8 + qk / 32 + 4)
        case .IQ2_S: return (qk, 2 + qk / 4 + qk / 16)
        case .IQ4_XS: return (qk, 2 + 2 + qk / 2 + qk / 64)
        case .IQ1_M: return (qk, qk / 8 + qk / 16 + qk / 32)
        case .TQ1_0: return (qk, 2 + 4 * 13)
        case .TQ2_0: return (qk, 2 + 64)
        case .MXFP4: return (32, 1 + 16)
        case .NVFP4: return (64, 4 + 32)
        case .Q1_0: return (128, 2 + 16)
        case .Q4_2, .Q4_3, .Q4_0_4_4, .Q4_0_4_8, .Q4_0_8_8, .IQ4_NL_4_4, .IQ4_NL_4_8, .IQ4_NL_8_8: return nil
        }
    }

    /// Elements per block (1 for plain types; 0 for removed codes).
    public var blockSize: Int { blockLayout?.blockSize ?? 0 }
    /// Bytes per block (0 for removed codes).
    public var bytesPerBlock: Int { blockLayout?.bytesPerBlock ?? 0 }

    /// Whether `GGUFFile.readFloats` can dequantize this type to fp32.
    public var isReadableAsFloat: Bool {
        switch self {
        case .F32, .F16, .BF16: return true
        default: return false
        }
    }

    /// The types `readFloats` supports, for error messages.
    static let readableNames = allCases.filter(\.isReadableAsFloat).map(\.name).joined(separator: ", ")
}
