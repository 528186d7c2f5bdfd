import DPO
#if canImport(Glibc)
import Glibc
#endif

/// Estimates, in Double so that no size can overflow, of what a request will allocate; requests
/// that cannot fit in the machine's physical memory are refused before anything is allocated
/// (an allocation failure inside the engine would end the process).
enum MemoryBudget {
    static let physicalBytes: Double = {
        let pages = Double(sysconf(Int32(_SC_PHYS_PAGES))), size = Double(sysconf(Int32(_SC_PAGESIZE)))
        return pages > 0 && size > 0 ? pages * size : Double(1 << 62)
    }()

    static func gib(_ bytes: Double) -> String {
        let g = (bytes / Double(1 << 30) * 10).rounded() / 10
        return "\(g) GiB"
    }

    /// A count for messages: exact below 2^53, else in exponent form.
    static func countText(_ d: Double) -> String {
        d.isFinite && d >= 0 && d < 0x1p53 ? String(Int64(d)) : "\(d)"
    }

    /// Throws out-of-memory when `bytes` exceed physical memory.
    static func check(_ bytes: Double, _ what: String) throws {
        if !(bytes <= physicalBytes) {
            throw APIError.outOfMemory("\(what) needs about \(gib(bytes)), more than the machine's \(gib(physicalBytes)) of memory")
        }
    }

    /// The parameter count the layout will have (ParameterLayout's sum, in Double).
    static func parameterCount(_ c: LlamaConfig) -> Double {
        let h = Double(c.hiddenSize), hd = Double(c.resolvedHeadDim), i = Double(c.intermediateSize)
        let q = Double(c.numAttentionHeads) * hd, kv = Double(c.numKeyValueHeads) * hd
        var layer = 2 * h + q * h + 2 * kv * h + h * q + 3 * i * h
        if c.qkvBias { layer += q + 2 * kv }
        if c.outputProjectionBias { layer += h }
        if c.mlpBias { layer += 2 * i + h }
        let embed = Double(c.vocabSize) * h
        return embed * (c.tieWordEmbeddings ? 1 : 2) + Double(c.numHiddenLayers) * layer + h
    }

    /// A model's weights (`copies` = 1) or weights plus training state.
    static func checkModel(_ c: LlamaConfig, copies: Double, _ what: String) throws {
        try check(parameterCount(c) * 4 * copies, what)
    }

    /// Activations of one forward over sequences of the given lengths (plus the backward's when
    /// `training`), with `headRows` LM-head rows.
    static func checkForward(_ c: LlamaConfig, lengths: [Int], headRows: Int, training: Bool, _ what: String) throws {
        let t = Double(lengths.reduce(0, +)), longest = Double(lengths.max() ?? 0)
        let h = Double(c.hiddenSize), hd = Double(c.resolvedHeadDim), i = Double(c.intermediateSize)
        let q = Double(c.numAttentionHeads) * hd, kv = Double(c.numKeyValueHeads) * hd
        let layers = Double(c.numHiddenLayers)
        let perLayer = h + 2 + 2 * q + 2 * kv + Double(c.numAttentionHeads) + 2 * i
        var perToken = (training ? layers + 1 : 2) * h + (training ? layers : 1) * perLayer + h + i + hd
        if training { perToken += 3 * h + 2 * q + 2 * kv + 3 * i }
        let scratch = 2 * longest * longest * 2
        let head = Double(headRows) * h * 3 + Double(min(headRows, 256)) * Double(c.vocabSize)
        try check((t * perToken + scratch + head) * 4, what)
    }

    /// KV caches and per-step buffers of generation.
    static func checkGeneration(_ c: LlamaConfig, promptLengths: [Int], maxNewTokens: Int) throws {
        let kv = Double(c.numKeyValueHeads) * Double(c.resolvedHeadDim)
        let cached = promptLengths.reduce(0.0) { $0 + Double($1) + Double(maxNewTokens) }
        let caches = cached * kv * 2 * Double(c.numHiddenLayers)
        let longest = Double(promptLengths.max() ?? 0) + Double(maxNewTokens)
        let logits = Double(promptLengths.count) * Double(c.vocabSize)
        try check((caches + longest * longest + logits) * 4, "generation")
        try checkForward(c, lengths: [promptLengths.max() ?? 0], headRows: 1, training: false, "generation")
    }
}
