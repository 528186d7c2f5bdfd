/// Where one adapted linear layer's A [r, in] and B [out, r] live in the adapter's flat buffer.
struct LoraSlot {
    let a: Int, b: Int
    let inFeatures: Int, outFeatures: Int
}

/// LoRA adapters for every targeted linear layer of a model (Hu et al. 2021, as PEFT implements
/// them): y = W x + scaling * B A dropout(x), W frozen. All A and B matrices live in one flat fp32
/// buffer, with their gradients (allocated on the first backward) in the same layout, so the
/// optimizer sees one buffer exactly as it does for full fine-tuning.
///
/// Tensor names are the keys PEFT saves in `adapter_model.safetensors`:
/// `base_model.model.model.layers.<l>.self_attn.q_proj.lora_A.weight` ([r, in]) and `lora_B.weight`
/// ([out, r]), in layer order and, within a layer, A then B of q, k, v, o, gate, up, down.
public final class LoraAdapter {
    public let config: LoraConfig
    /// Every A and B matrix with its PEFT name, shape and offset in `parameters`.
    public let tensors: [TensorSpec]
    public let parameters: FloatBuffer
    /// d loss / d adapter, same layout; nil before the first backward.
    public internal(set) var gradients: FloatBuffer?
    /// slots[layer][module.rawValue], nil where the module is not adapted.
    let slots: [[LoraSlot?]]
    let scale: Float
    /// Training forwards run so far (the dropout masks' stream position; checkpointed).
    var dropoutCalls: UInt64 = 0
    /// Seed of the dropout masks.
    var dropoutSeed: UInt64
    /// The largest input width of an adapted layer (scratch sizing).
    let maxInFeatures: Int
    var scratch: LoraScratch?

    /// An adapter for a model of `model` shape, initialised as `config.initLoraWeights` says
    /// (A Kaiming-uniform, B zero by default) from `seed`.
    public init(config: LoraConfig, model c: LlamaConfig, seed: UInt64) throws {
        try config.validate()
        let plan = try LoraAdapter.plan(config, model: c)
        self.config = config
        tensors = plan.tensors
        slots = plan.slots
        scale = Float(config.scaling)
        parameters = try FloatBuffer(checkedCount: plan.count, for: "the LoRA adapters of this model")
        maxInFeatures = plan.maxIn
        dropoutSeed = seed ^ 0x6C6F_7261_6472_6F70  // "loradrop"
        initialize(seed: seed)
    }

    /// The tensors, slots and float count of an adapter of `config` for a model of shape `c`,
    /// without allocating it (after checking its size against memory).
    static func plan(_ config: LoraConfig, model c: LlamaConfig) throws
        -> (tensors: [TensorSpec], slots: [[LoraSlot?]], count: Int, maxIn: Int) {
        try config.validate()
        let r = config.r, h = c.hiddenSize, hd = c.resolvedHeadDim, inter = c.intermediateSize
        let qW = c.numAttentionHeads * hd, kvW = c.numKeyValueHeads * hd
        let shapes: [LoraModule: (inF: Int, outF: Int)] = [
            .q: (h, qW), .k: (h, kvW), .v: (h, kvW), .o: (qW, h), .gate: (h, inter), .up: (h, inter), .down: (inter, h),
        ]
        let modules = config.modules
        let perLayer = modules.reduce(0.0) { $0 + Double(r) * Double(shapes[$1]!.inF + shapes[$1]!.outF) }
        try MemoryLimit.check(perLayer * Double(c.numHiddenLayers) * 4, "the LoRA adapters of this model")
        var specs: [TensorSpec] = [], slots: [[LoraSlot?]] = []
        var offset = 0
        for l in 0..<c.numHiddenLayers {
            var row = [LoraSlot?](repeating: nil, count: LoraModule.allCases.count)
            for m in modules {
                let (inF, outF) = shapes[m]!
                let prefix = "base_model.model.model.layers.\(l).\(m.path)."
                specs.append(TensorSpec(name: prefix + "lora_A.weight", shape: [r, inF], offset: offset))
                specs.append(TensorSpec(name: prefix + "lora_B.weight", shape: [outF, r], offset: offset + r * inF))
                row[m.rawValue] = LoraSlot(a: offset, b: offset + r * inF, inFeatures: inF, outFeatures: outF)
                offset += r * (inF + outF)
            }
            slots.append(row)
        }
        return (specs, slots, offset, modules.map { shapes[$0]!.inF }.max() ?? h)
    }

    /// A copy with the same config and weights (TRL's frozen "ref" adapter).
    public func copy() throws -> LoraAdapter {
        let c = try LoraAdapter(config: config, tensors: tensors, slots: slots, maxInFeatures: maxInFeatures)
        c.parameters.copy(from: parameters)
        c.dropoutSeed = dropoutSeed
        return c
    }

    /// An adapter with zero weights laid out as `tensors` and `slots` say (a copy, or a load that
    /// fills it).
    init(config: LoraConfig, tensors: [TensorSpec], slots: [[LoraSlot?]], maxInFeatures: Int) throws {
        self.config = config; self.tensors = tensors; self.slots = slots; self.maxInFeatures = maxInFeatures
        scale = Float(config.scaling)
        dropoutSeed = 0
        parameters = try FloatBuffer(checkedCount: tensors.reduce(0) { $0 + $1.count }, for: "the LoRA adapters of this model")
    }

    public var parameterCount: Int { parameters.count }

    public func tensor(named name: String) -> TensorSpec? { tensors.first { $0.name == name } }

    /// The named tensor's values (a view into `parameters`).
    public func parameter(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        tensor(named: name).map { UnsafeMutableBufferPointer(start: parameters.pointer + $0.offset, count: $0.count) }
    }

    /// The named tensor's gradient (nil before the first backward).
    public func gradient(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        guard let g = gradients, let s = tensor(named: name) else { return nil }
        return UnsafeMutableBufferPointer(start: g.pointer + s.offset, count: s.count)
    }

    /// Allocates the gradient buffer if needed and sets it to zero.
    func zeroGradients() throws {
        if let g = gradients { g.zero() } else { gradients = try FloatBuffer(checkedCount: parameters.count, for: "the gradients of the LoRA adapters") }
    }

    /// PEFT's `reset_lora_parameters`: by default A ~ U(-1/sqrt(in), 1/sqrt(in)) (what
    /// `kaiming_uniform_(A, a=sqrt(5))` gives: gain sqrt(2 / (1 + 5)), bound gain sqrt(3 / in)) and
    /// B = 0; "gaussian": A ~ N(0, 1/r), B = 0; `False`: B too like an nn.Linear weight, U(+-1/sqrt(r)).
    private func initialize(seed: UInt64) {
        var rng = Xoshiro256(seed: seed)
        let p = parameters.pointer, r = config.r
        for row in slots {
            for case let s? in row {
                let countA = r * s.inFeatures, countB = s.outFeatures * r
                switch config.initLoraWeights {
                case .default, .random:
                    let bound = 1 / Double(s.inFeatures).squareRoot()
                    for i in 0..<countA { p[s.a + i] = Float((rng.nextUniform() * 2 - 1) * bound) }
                case .gaussian:
                    for i in 0..<countA { p[s.a + i] = Float(rng.nextNormal() / Double(r)) }
                }
                if config.initLoraWeights == .random {
                    let bound = 1 / Double(r).squareRoot()
                    for i in 0..<countB { p[s.b + i] = Float((rng.nextUniform() * 2 - 1) * bound) }
                } else {
                    (p + s.b).update(repeating: 0, count: countB)
                }
            }
        }
    }

    /// The scratch buffers of a pass over `tokens` rows (grown as needed; `DPOError.outOfMemory`
    /// when they do not fit).
    func prepareScratch(tokens: Int) throws -> LoraScratch {
        let dropout = config.loraDropout > 0
        if let s = scratch, s.tokens >= tokens, s.hasDropout == dropout { return s }
        scratch = nil
        let s = try LoraScratch(tokens: max(tokens, 1), rank: config.r, maxIn: maxInFeatures, dropout: dropout)
        scratch = s
        return s
    }
}

/// Temporaries of the adapter products: u = A x and dy B [tokens, r]; with dropout, the dropped
/// input and the adapter's input gradient [tokens, max in].
final class LoraScratch {
    let tokens: Int, hasDropout: Bool
    let u: FloatBuffer, dyB: FloatBuffer
    let dropped: FloatBuffer?, inputGrad: FloatBuffer?

    init(tokens: Int, rank: Int, maxIn: Int, dropout: Bool) throws {
        self.tokens = tokens; hasDropout = dropout
        u = try FloatBuffer(checkedCount: tokens * rank, for: "the LoRA temporaries of \(tokens) tokens")
        dyB = try FloatBuffer(checkedCount: tokens * rank, for: "the LoRA temporaries of \(tokens) tokens")
        dropped = dropout ? try FloatBuffer(checkedCount: tokens * maxIn, for: "the LoRA dropout temporaries of \(tokens) tokens") : nil
        inputGrad = dropout ? try FloatBuffer(checkedCount: tokens * maxIn, for: "the LoRA dropout temporaries of \(tokens) tokens") : nil
    }
}
