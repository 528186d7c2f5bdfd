/// The adapter state of one forward (and of the backward that follows it).
struct LoraPass {
    let adapter: LoraAdapter
    let scratch: LoraScratch
    /// The training forward's number in the dropout stream; nil when dropout is off.
    let dropoutCall: UInt64?
}

extension LlamaModel {
    /// Attaches `adapter` (made for this model's shape): from now on the base weights are frozen
    /// (no gradient buffer; the one a previous full fine-tuning allocated is freed), forwards add
    /// the adapter's share and backwards compute the adapter's gradients only. Refused while a
    /// trainer holds accumulated gradients, or when the model already has an adapter.
    public func attachAdapter(_ adapter: LoraAdapter) throws {
        if self.adapter != nil {
            throw DPOError.wrongState("the model already has a LoRA adapter: merge_and_unload or detach it first")
        }
        if gradientHolder != nil {
            throw DPOError.wrongState("a trainer holds accumulated gradients of this model: step its optimizer first")
        }
        try checkAdapterShape(adapter)
        self.adapter = adapter
        gradients = nil
        pending = nil
    }

    /// A fresh adapter for this model (`config.initLoraWeights`, from `seed`), attached.
    @discardableResult
    public func addAdapter(_ config: LoraConfig, seed: UInt64) throws -> LoraAdapter {
        let a = try LoraAdapter(config: config, model: self.config, seed: seed)
        try attachAdapter(a)
        return a
    }

    /// Removes the adapter without merging it (the model is the base again, trainable as a whole).
    @discardableResult
    public func detachAdapter() throws -> LoraAdapter? {
        if gradientHolder != nil {
            throw DPOError.wrongState("a trainer holds accumulated gradients of this model: step its optimizer first")
        }
        defer { adapter = nil; pending = nil }
        return adapter
    }

    /// PEFT's `merge_and_unload`: W += scaling B A for every adapted layer, then the adapter is
    /// removed. The model is a plain model with the adapter's effect built into its weights.
    public func mergeAndUnload() throws {
        guard let a = adapter else { throw DPOError.wrongState("merge_and_unload: the model has no LoRA adapter") }
        if gradientHolder != nil {
            throw DPOError.wrongState("a trainer holds accumulated gradients of this model: step its optimizer first")
        }
        try checkFullWeights("merge_and_unload")
        let p = parameters.pointer, ap = UnsafePointer(a.parameters.pointer)
        for (l, row) in a.slots.enumerated() {
            for m in LoraModule.allCases {
                guard let s = row[m.rawValue] else { continue }
                // W [out, in] += scale * B [out, r] A [r, in] (fp32, as PEFT's delta weight).
                sgemm(m: s.outFeatures, n: s.inFeatures, k: a.config.r, alpha: a.scale, a: ap + s.b, lda: a.config.r,
                      b: ap + s.a, ldb: s.inFeatures, beta: 1, c: p + weightOffset(layer: l, m), ldc: s.inFeatures)
            }
        }
        adapter = nil
        pending = nil
    }

    /// Runs `body` with the adapter switched off (PEFT's `disable_adapter()`): forwards in it
    /// compute the base model exactly.
    public func withAdaptersDisabled<T>(_ body: () throws -> T) rethrows -> T {
        let saved = adaptersActive
        adaptersActive = false
        defer { adaptersActive = saved }
        return try body()
    }

    /// Runs `body` with `substitute` in place of the attached adapter (TRL's frozen "ref" adapter).
    func withAdapter<T>(_ substitute: LoraAdapter, _ body: () throws -> T) throws -> T {
        try checkAdapterShape(substitute)
        let saved = substituteAdapter
        substituteAdapter = substitute
        defer { substituteAdapter = saved }
        return try body()
    }

    /// The adapter forwards use now (nil: none, or switched off).
    var forwardAdapter: LoraAdapter? { adaptersActive ? (substituteAdapter ?? adapter) : nil }

    /// The adapter state of a forward over `tokens` rows; `training` forwards draw a dropout mask.
    func beginLoraPass(tokens: Int, training: Bool) throws -> LoraPass? {
        guard let a = forwardAdapter else { return nil }
        let scratch = try a.prepareScratch(tokens: tokens)
        var call: UInt64? = nil
        if training && a.config.loraDropout > 0 {
            call = a.dropoutCalls
            a.dropoutCalls &+= 1
        }
        return LoraPass(adapter: a, scratch: scratch, dropoutCall: call)
    }

    /// Layer l's adapted module m in the current pass, nil when it has no adapter.
    func loraLinear(_ l: Int, _ m: LoraModule) -> LoraLinear? {
        guard let pass = lora, let s = pass.adapter.slots[l][m.rawValue] else { return nil }
        let a = pass.adapter, p = UnsafePointer(a.parameters.pointer)
        let dropout = pass.dropoutCall.map {
            LoraDropout(p: a.config.loraDropout, key: LoraDropout.key(seed: a.dropoutSeed, call: $0, layer: l, module: m))
        }
        return LoraLinear(a: p + s.a, b: p + s.b, rank: a.config.r, inFeatures: s.inFeatures, outFeatures: s.outFeatures,
                          scale: a.scale, scratch: pass.scratch, dropout: dropout, bf16: bf16)
    }

    /// Offset of layer l's weight of module m in `parameters`.
    func weightOffset(layer l: Int, _ m: LoraModule) -> Int {
        let o = layout.layers[l]
        switch m {
        case .q: return o.q
        case .k: return o.k
        case .v: return o.v
        case .o: return o.o
        case .gate: return o.gate
        case .up: return o.up
        case .down: return o.down
        }
    }

    func checkAdapterShape(_ a: LoraAdapter) throws {
        let c = config, hd = c.resolvedHeadDim
        let qW = c.numAttentionHeads * hd, kvW = c.numKeyValueHeads * hd, h = c.hiddenSize, i = c.intermediateSize
        let shapes: [(Int, Int)] = [(h, qW), (h, kvW), (h, kvW), (qW, h), (h, i), (h, i), (i, h)]
        guard a.slots.count == c.numHiddenLayers else {
            throw DPOError.invalidArgument("the LoRA adapter has \(a.slots.count) layers, the model \(c.numHiddenLayers)")
        }
        for row in a.slots {
            for m in LoraModule.allCases {
                if let s = row[m.rawValue], (s.inFeatures, s.outFeatures) != shapes[m.rawValue] {
                    throw DPOError.invalidArgument("the LoRA adapter's \(m.name) maps \(s.inFeatures) -> \(s.outFeatures) features, the model's \(shapes[m.rawValue].0) -> \(shapes[m.rawValue].1)")
                }
            }
        }
    }
}
