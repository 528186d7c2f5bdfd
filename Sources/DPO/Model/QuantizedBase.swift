/// LoRA on a quantized GGUF base (`keep_base_quantized`): the frozen matrices (the linear weights
/// of every decoder layer, the embedding and the LM head) stay in their GGUF block form
/// (`QuantizedMatrix`), outside the fp32 parameter buffer, whose layout omits them
/// (ParameterLayout). Forwards and the input-gradient products of backwards dequantize them tile
/// by tile (FrozenLinear.swift, `FrozenWeight.quantized`), the embedding lookup one row per token;
/// norms and biases stay fp32. For SmolLM2-135M Q4_1 the linear weights are 425 MB as fp32 and
/// 66 MB quantized (Q4_1), the tied embedding 113 MB and 30 MB (Q8_0).
///
/// Such a base cannot be trained as a whole (no fp32 W to update): `zeroGradients` and a
/// backward without an adapter are refused, and so are `save(directory:)`, `saveGGUF` and
/// `mergeAndUnload`, which need the fp32 weights: `dequantized()` makes the fp32 model (with a
/// copy of the adapter) on which they work.
/// An adapter of it saves as usual (`saveAdapter`).

/// The quantized matrices of a model: linear weights by layer and module, embedding, LM head.
public final class QuantizedBase {
    /// matrices[layer][module.rawValue].
    let matrices: [[QuantizedMatrix]]
    /// The embedding [vocab, hidden].
    public let embedding: QuantizedMatrix
    /// The LM head [vocab, hidden]: the embedding when tied.
    public let lmHead: QuantizedMatrix

    /// Bytes the quantized matrices take (the tied head counted once).
    public let byteCount: Int
    /// Bytes the same weights take as fp32.
    public let fp32ByteCount: Int

    /// The linear weights of every decoder layer of `file` (see `QuantizedMatrix.linearWeights(of:)`),
    /// its embedding and LM head.
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
        embedding = try QuantizedMatrix.load("model.embed_tokens.weight", from: file)
        lmHead = config.tieWordEmbeddings ? embedding : try QuantizedMatrix.load("lm_head.weight", from: file)
        let all = Array(matrices.joined()) + [embedding] + (config.tieWordEmbeddings ? [] : [lmHead])
        byteCount = all.reduce(0) { $0 + $1.byteCount }
        fp32ByteCount = all.reduce(0) { $0 + $1.fp32ByteCount }
    }

    /// Layer l's weight of module m.
    public func matrix(layer l: Int, _ m: LoraModule) -> QuantizedMatrix { matrices[l][m.rawValue] }
}

extension LlamaModel {
    /// Loads a GGUF file as `load(ggufFile:)` does; with `keepBaseQuantized`, the matrices (the
    /// decoder layers' linear weights, the embedding, the LM head) stay quantized in
    /// `quantizedBase` and the fp32 buffer holds the rest (norms, biases).
    /// Such a model runs forwards (and generation) and trains a LoRA adapter; see the file comment
    /// for what it refuses.
    public static func load(ggufFile path: String, keepBaseQuantized: Bool) throws -> LlamaModel {
        try loadGGUF(path, keepBaseQuantized: keepBaseQuantized)
    }

    /// A new fp32 model equal to this one: the quantized matrices dequantized (exactly, as
    /// `load(ggufFile:)` reads them), the rest of the parameters copied; the GGUF metadata, `bf16`
    /// and a copy of the adapter (with its dropout stream) carried over. On it `mergeAndUnload`,
    /// `save(directory:)` and `saveGGUF` work. A model that is not kept quantized is copied the
    /// same way. Throws `DPOError.outOfMemory` when the fp32 model does not fit.
    public func dequantized() throws -> LlamaModel {
        let copy = try LlamaModel(config: config)
        copy.ggufMetadata = ggufMetadata
        copy.extraConfig = extraConfig
        copy.bf16 = bf16
        let src = UnsafePointer(parameters.pointer), dst = copy.parameters.pointer
        for spec in layout.tensors {
            guard let target = copy.layout.tensor(named: spec.name), target.count == spec.count else {
                throw DPOError.internal("dequantized: tensor '\(spec.name)' has no place in the fp32 layout")
            }
            (dst + target.offset).update(from: src + spec.offset, count: spec.count)
        }
        if let base = quantizedBase {
            let (v, h) = (config.vocabSize, config.hiddenSize)
            try base.embedding.dequantize(rows: 0..<v, into: UnsafeMutableBufferPointer(start: dst + copy.layout.embed, count: v * h))
            if !config.tieWordEmbeddings {
                try base.lmHead.dequantize(rows: 0..<v, into: UnsafeMutableBufferPointer(start: dst + copy.layout.lmHead, count: v * h))
            }
            for (l, row) in base.matrices.enumerated() {
                for m in LoraModule.allCases {
                    let q = row[m.rawValue]
                    try q.dequantize(rows: 0..<q.outFeatures, into: UnsafeMutableBufferPointer(
                        start: dst + copy.weightOffset(layer: l, m), count: q.outFeatures * q.inFeatures))
                }
            }
        }
        if let a = adapter {
            let c = try a.copy()
            c.dropoutCalls = a.dropoutCalls
            try copy.attachAdapter(c)
        }
        return copy
    }

    /// `load(path:)`; with `keepBaseQuantized` the path must name a GGUF model (a `.gguf` file or
    /// a directory holding exactly one and no config.json), loaded kept quantized.
    public static func load(path: String, keepBaseQuantized: Bool) throws -> LlamaModel {
        guard keepBaseQuantized else { return try load(path: path) }
        if isDirectory(path) {
            if fileExists(joinPath(path, "config.json")) {
                throw DPOError.invalidArgument("keep_base_quantized needs a GGUF model, and '\(path)' is a Hugging Face model directory (its weights are not quantized)")
            }
            return try load(ggufFile: try ggufFile(inDirectory: path), keepBaseQuantized: true)
        }
        guard fileExists(path) else { throw DPOError.io("model path '\(path)' does not exist") }
        return try load(ggufFile: path, keepBaseQuantized: true)
    }

    /// Layer l's frozen weight of module m, wherever it lives.
    @inline(__always)
    func frozenWeight(_ l: Int, _ m: LoraModule) -> FrozenWeight {
        if let base = quantizedBase { return .quantized(base.matrices[l][m.rawValue]) }
        let w = UnsafePointer(parameters.pointer) + weightOffset(layer: l, m)
        return tiledFrozenProducts ? .fp32Tiled(w) : .fp32(w)
    }

    /// The LM head's frozen weight, wherever it lives.
    func frozenHead() -> FrozenWeight {
        if let base = quantizedBase { return .quantized(base.lmHead) }
        let w = UnsafePointer(parameters.pointer) + layout.lmHead
        return tiledFrozenProducts ? .fp32Tiled(w) : .fp32(w)
    }

    /// x[t] = the embedding row of tokens[t], for t < count (tokens already checked against the
    /// vocabulary); a quantized embedding dequantizes each row.
    func embed(_ tokens: UnsafePointer<Int32>, count T: Int, into x: UnsafeMutablePointer<Float>) {
        let H = config.hiddenSize
        if let e = quantizedBase?.embedding {
            let blocks = 0..<H / e.type.blockSize
            parallelFor(T, grain: 64) { range in
                for t in range {
                    let r = Int(tokens[t])
                    e.dequantizeTile(rows: r..<r + 1, blocks: blocks, into: x + t * H, parallel: false)
                }
            }
            return
        }
        let table = UnsafePointer(parameters.pointer) + layout.embed
        parallelFor(T, grain: 64) { range in
            for t in range { (x + t * H).update(from: table + Int(tokens[t]) * H, count: H) }
        }
    }

    /// Throws `DPOError.wrongState` naming `what` when the base is kept quantized (its linear
    /// weights are not in the fp32 buffer).
    func checkFullWeights(_ what: String) throws {
        guard quantizedBase != nil else { return }
        throw DPOError.wrongState("\(what) needs the fp32 weights, and this model keeps its GGUF base quantized (keep_base_quantized): train a LoRA adapter of it, dequantize it first (Swift dequantized(), Python Model.dequantized(), C dpo_model_dequantize), or load the file with keep_base_quantized=false")
    }
}
