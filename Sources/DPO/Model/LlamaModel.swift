/// A Llama-family decoder: config, one flat fp32 parameter buffer with named views, and (once a
/// backward has run) a gradient buffer of the same layout.
///
/// Not thread-safe: one model is used by one thread at a time; distinct models are independent.
public final class LlamaModel {
    public let config: LlamaConfig
    public let layout: ParameterLayout
    /// All parameters, laid out by `layout`.
    public let parameters: FloatBuffer
    /// Gradients in the same layout, allocated on first use (a frozen reference model has none,
    /// nor has a model with a LoRA adapter: its base is frozen).
    public internal(set) var gradients: FloatBuffer?
    /// The LoRA adapter (LoraModel.swift): when set, the base weights are frozen and training
    /// updates the adapter only.
    public internal(set) var adapter: LoraAdapter?
    /// False inside `withAdaptersDisabled`.
    var adaptersActive = true
    /// An adapter used in place of `adapter` (the DPO trainer's frozen reference copy).
    var substituteAdapter: LoraAdapter?
    /// The adapter state of the forward, backward or decode step running now.
    var lora: LoraPass?
    /// The trainer whose accumulated micro-batches the gradient buffer holds, if any (see
    /// OptimizationState): another trainer of this model must not overwrite them.
    weak var gradientHolder: AnyObject?
    /// Keys of the loaded `config.json` that swift-dpo does not model, written back on save.
    var extraConfig = JSONObject()
    /// The metadata of the GGUF file the model was loaded from (tokenizer and other
    /// non-architecture keys are written back by `saveGGUF`); nil for other models.
    public internal(set) var ggufMetadata: GGUFMetadata?
    /// The matrices (decoder layers' linear weights, embedding, LM head) kept in their GGUF block
    /// form (QuantizedBase.swift), when the model was loaded with `keepBaseQuantized`; then
    /// `layout` omits them.
    public internal(set) var quantizedBase: QuantizedBase?
    /// Test hook: fp32 frozen products use the tiles of the quantized ones (`FrozenWeight.fp32Tiled`),
    /// so that a model and its quantized-base twin compute the same bits.
    var tiledFrozenProducts = false

    /// bf16 mixed precision (TRL's `bf16=True`, PyTorch's CPU autocast to bfloat16): the matrix
    /// products of the forward and the backward (linear layers, attention, LM head) round their
    /// inputs to bfloat16 and accumulate in fp32 (BF16Gemm.swift). Parameters, gradients,
    /// activations between products, norms, softmax and log-probs stay fp32. Off by default (exact
    /// fp32). KV-cached generation follows it too. A trainer sets it from its config's `bf16` (on
    /// the policy and the reference), as TRL's `bf16=True` autocasts both forwards; it stays set
    /// after training, as accelerate's autocast wrapper stays on a prepared model.
    public var bf16 = false

    let invFreq: [Float]
    var workspace: Workspace?
    /// What the last forward computed, if it kept activations for a backward.
    var pending: PendingBackward?

    struct PendingBackward {
        let packed: PackedTokens
        let head: HeadQuery
        /// The adapter state of that forward (its dropout masks are regenerated).
        let lora: LoraPass?
    }

    /// A model with zeroed parameters (callers fill them: `randomlyInitialized` or a loader).
    public convenience init(config: LlamaConfig) throws {
        try self.init(config: config, omitMatrices: false)
    }

    /// A model whose layout omits the matrices when `omitMatrices` (the caller sets
    /// `quantizedBase`).
    init(config: LlamaConfig, omitMatrices: Bool) throws {
        try config.validate()
        // Before the layout (whose tensor list, about 256 bytes a tensor, grows with the layer
        // count) and the buffer.
        try MemoryLimit.check(ParameterLayout.parameterCount(config, omitMatrices: omitMatrices) * 4
                                + Double(ParameterLayout.tensorCount(config, omitMatrices: omitMatrices)) * 256,
                              "the parameters of this model")
        self.config = config
        layout = ParameterLayout(config: config, omitMatrices: omitMatrices)
        parameters = try FloatBuffer(checkedCount: layout.count, for: "the parameters of this model")
        invFreq = ropeInverseFrequencies(headDim: config.resolvedHeadDim, theta: config.ropeTheta,
                                         scaling: config.ropeScaling)
    }

    /// A model initialised like transformers' `_init_weights`: every matrix and the embedding
    /// normal(0, initializer_range), biases 0, norm weights 1, the padding row of the embedding 0.
    public static func randomlyInitialized(config: LlamaConfig, seed: UInt64) throws -> LlamaModel {
        let model = try LlamaModel(config: config)
        var rng = Xoshiro256(seed: seed)
        let std = config.initializerRange
        let p = model.parameters.pointer
        for spec in model.layout.tensors {
            if ParameterLayout.isNormWeight(spec.name) {
                (p + spec.offset).update(repeating: 1, count: spec.count)
            } else if spec.shape.count == 2 {
                for i in 0..<spec.count { p[spec.offset + i] = Float(rng.nextNormal() * std) }
            }
        }
        if let pad = config.padTokenId, pad >= 0, pad < config.vocabSize {
            (p + model.layout.embed + pad * config.hiddenSize).update(repeating: 0, count: config.hiddenSize)
        }
        return model
    }

    /// The model's parameter count (a tied embedding counted once), the quantized matrices of a
    /// base kept quantized included; `layout.count` is the size of the fp32 buffer.
    public var parameterCount: Int {
        quantizedBase == nil ? layout.count : Int(ParameterLayout.parameterCount(config))
    }

    /// The named tensor's values as a buffer view into `parameters`.
    public func parameter(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        layout.tensor(named: name).map { UnsafeMutableBufferPointer(start: parameters.pointer + $0.offset, count: $0.count) }
    }

    /// The named tensor's gradient (nil before the first backward).
    public func gradient(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        guard let g = gradients, let s = layout.tensor(named: name) else { return nil }
        return UnsafeMutableBufferPointer(start: g.pointer + s.offset, count: s.count)
    }

    /// Allocates the gradient buffer of what is trained if needed (`DPOError.outOfMemory` when it
    /// does not fit) and sets it to zero: the adapter's with a LoRA adapter, else the model's.
    public func zeroGradients() throws {
        if let a = adapter { return try a.zeroGradients() }
        try checkFullWeights("full fine-tuning")
        if let g = gradients { g.zero() } else { gradients = try FloatBuffer(checkedCount: layout.count, for: "the gradients of this model") }
    }

    /// What the optimizer trains: the adapter's tensors when one is attached, else the model's.
    public var trainableTensors: [TensorSpec] { adapter?.tensors ?? layout.tensors }
    public var trainableParameters: FloatBuffer { adapter?.parameters ?? parameters }
    /// The gradient buffer of `trainableTensors` (nil before the first backward).
    public var trainableGradients: FloatBuffer? { adapter != nil ? adapter!.gradients : gradients }

    var attentionShape: AttentionShape {
        AttentionShape(heads: config.numAttentionHeads, kvHeads: config.numKeyValueHeads,
                       headDim: config.resolvedHeadDim, bf16: bf16)
    }

    func workspaceFor(tokens: Int, headRows: Int, scratch: Int, keep: Bool) throws -> Workspace {
        if let w = workspace, w.fits(tokens: tokens, headRows: headRows, scratchCount: scratch, keep: keep) {
            return w
        }
        // Grow to the largest shape seen so far so alternating shapes do not reallocate each time
        // (the old workspace is freed first).
        let old = (tokens: workspace?.tokens ?? 0, headRows: workspace?.headRows ?? 0,
                   scratch: workspace?.scratchCount ?? 0, keep: workspace?.keep ?? false)
        workspace = nil
        let sizes = WorkspaceSizes(config: config, tokens: max(tokens, old.tokens), headRows: max(headRows, old.headRows),
                                   scratchCount: max(scratch, old.scratch), keep: keep || old.keep)
        let w = try Workspace(config: config, sizes: sizes)
        workspace = w
        return w
    }

    /// Releases the activation buffers (they are reallocated by the next forward).
    public func releaseWorkspace() { workspace = nil; pending = nil }
}
