import DPO

/// Memory checks the C layer makes before it asks the engine for something large, so a request
/// that cannot fit is refused (DPO_ERR_OUT_OF_MEMORY) before anything is allocated. The limit is
/// the engine's `MemoryLimit` (physical memory, `ulimit -v`, the cgroup's limit). Activations are
/// not estimated here: the engine checks each workspace against the same limit from the
/// workspace's own sizes when it allocates it, for every door (C, Python, Swift, command line).
enum MemoryBudget {
    /// A count for messages: exact below 2^53, else in exponent form.
    static func countText(_ d: Double) -> String {
        d.isFinite && d >= 0 && d < 0x1p53 ? String(Int64(d)) : "\(d)"
    }

    /// A model's weights (`copies` = 1) or weights plus training state.
    static func checkModel(_ c: LlamaConfig, copies: Double, _ what: String) throws {
        try MemoryLimit.check(ParameterLayout.parameterCount(c) * 4 * copies, what)
    }

    /// KV caches and per-step buffers of generation.
    static func checkGeneration(_ c: LlamaConfig, promptLengths: [Int], maxNewTokens: Int) throws {
        let kv = Double(c.numKeyValueHeads) * Double(c.resolvedHeadDim)
        let cached = promptLengths.reduce(0.0) { $0 + Double($1) + Double(maxNewTokens) }
        let caches = cached * kv * 2 * Double(c.numHiddenLayers)
        let longest = Double(promptLengths.max() ?? 0) + Double(maxNewTokens)
        let logits = Double(promptLengths.count) * Double(c.vocabSize)
        // The prefill's activations: one layer's worth for the longest prompt.
        let h = Double(c.hiddenSize), q = Double(c.numAttentionHeads) * Double(c.resolvedHeadDim)
        let prefill = longest * (4 * h + 2 * q + 2 * kv + 2 * Double(c.intermediateSize) + Double(c.resolvedHeadDim))
        try MemoryLimit.check((caches + longest * longest + logits + prefill) * 4, "generation")
    }
}
