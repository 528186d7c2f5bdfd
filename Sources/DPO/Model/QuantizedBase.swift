/// LoRA on a quantized GGUF base (`keep_base_quantized`): the frozen linear weights of every
/// decoder layer stay in their GGUF block form (`QuantizedMatrix`), outside the fp32 parameter
/// buffer, whose layout omits them (ParameterLayout). Forwards and the input-gradient products of
/// backwards dequantize them tile by tile (FrozenLinear.swift, `FrozenWeight.quantized`); the
/// embedding, norms, biases and LM head stay fp32. For SmolLM2-135M Q4_1 the linear weights are
/// 425 MB as fp32 and 66 MB quantized.
///
/// Such a base cannot be trained as a whole (no fp32 W to update): `zeroGradients` and a
/// backward without an adapter are refused, and so are `save(directory:)`, `saveGGUF` and
/// `mergeAndUnload`, which need the fp32 weights (load the file without `keepBaseQuantized`).
/// An adapter of it saves as usual (`saveAdapter`).

/// The quantized linear weights of a model, by layer and module.
public final class QuantizedBase {
    /// matrices[layer][module.rawValue].
    let matrices: [[QuantizedMatrix]]

    /// Bytes the quantized weights take.
    public let byteCount: Int
    /// Bytes the same weights take as fp32.
    public let fp32ByteCount: Int

    /// The linear weights of every decoder layer of `file` (see `QuantizedMatrix.linearWeights(of:)`).
    init(file: GGUFFile, config: LlamaConfig) throws {
        var byName = try QuantizedMatrix.linearWeights(of: file)
        var matrices: [[QuantizedMatrix]] = []
        for l in 0..<config.numHiddenLayers {
            var row: [QuantizedMatrix] = []
            for m in LoraModule.allCases {
                let name = "model.layers.\(l).\(m.path).weight"
                guard let q = byName.removeValue(forKey: name) else {
                    throw DPOError.format("\(file.path): no quantized weight '\(name)'")
                }
                row.append(q)
            }
            matrices.append(row)
        }
        self.matrices = matrices
        byteCount = matrices.joined().reduce(0) { $0 + $1.byteCount }
        fp32ByteCount = matrices.joined().reduce(0) { $0 + $1.fp32ByteCount }
    }

    /// Layer l's weight of module m.
    public func matrix(layer l: Int, _ m: LoraModule) -> QuantizedMatrix { matrices[l][m.rawValue] }
}

extension LlamaModel {
    /// Loads a GGUF file as `load(ggufFile:)` does; with `keepBaseQuantized`, the linear weights
    /// of the decoder layers stay quantized in `quantizedBase` and the fp32 buffer holds the rest.
    /// Such a model runs forwards (and generation) and trains a LoRA adapter; see the file comment
    /// for what it refuses.
    public static func load(ggufFile path: String, keepBaseQuantized: Bool) throws -> LlamaModel {
        try loadGGUF(path, keepBaseQuantized: keepBaseQuantized)
    }

    /// Layer l's frozen weight of module m, wherever it lives.
    @inline(__always)
    func frozenWeight(_ l: Int, _ m: LoraModule) -> FrozenWeight {
        if let base = quantizedBase { return .quantized(base.matrices[l][m.rawValue]) }
        let w = UnsafePointer(parameters.pointer) + weightOffset(layer: l, m)
        return tiledFrozenProducts ? .fp32Tiled(w) : .fp32(w)
    }

    /// Throws `DPOError.wrongState` naming `what` when the base is kept quantized (its linear
    /// weights are not in the fp32 buffer).
    func checkFullWeights(_ what: String) throws {
        guard quantizedBase != nil else { return }
        throw DPOError.wrongState("\(what) needs the fp32 weights, and this model keeps its GGUF base quantized (keep_base_quantized): train a LoRA adapter of it, or load the file with keep_base_quantized=false")
    }
}
