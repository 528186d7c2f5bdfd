#if canImport(Glibc)
import Glibc
#endif

/// Decoding settings, named as in transformers' `generate`.
public struct GenerationConfig: Equatable, Sendable {
    public var maxNewTokens: Int = 32
    /// 0 means greedy decoding; otherwise logits are divided by it before sampling.
    public var temperature: Double = 0
    /// Keep only the k most likely tokens (0 = off).
    public var topK: Int = 0
    /// Keep the smallest set of tokens whose probability reaches top_p (1 = off).
    public var topP: Double = 1
    public var seed: UInt64 = 0
    /// Stop a sequence after any of these ids (nil = the model config's `eos_token_id`; [] = never).
    public var eosTokenIds: [Int32]? = nil

    public init() {}

    func validate() throws {
        if maxNewTokens < 0 { throw DPOError.invalidArgument("max_new_tokens must be >= 0, got \(maxNewTokens)") }
        if !(temperature >= 0) || !temperature.isFinite { throw DPOError.invalidArgument("temperature must be >= 0, got \(temperature)") }
        if topK < 0 { throw DPOError.invalidArgument("top_k must be >= 0, got \(topK)") }
        if !(topP > 0 && topP <= 1) { throw DPOError.invalidArgument("top_p must be in (0, 1], got \(topP)") }
    }
}

/// Keys and values (K after RoPE) of one sequence's tokens so far, per layer.
final class KVCache {
    let k: [FloatBuffer], v: [FloatBuffer]
    let capacity: Int
    var length = 0

    init(layers: Int, kvWidth: Int, capacity: Int) {
        self.capacity = capacity
        k = (0..<layers).map { _ in FloatBuffer(count: capacity * kvWidth) }
        v = (0..<layers).map { _ in FloatBuffer(count: capacity * kvWidth) }
    }
}

extension LlamaModel {
    /// Continues each prompt autoregressively with a KV cache: every new token costs one
    /// single-token forward per sequence (the sequences' tokens share each layer's GEMMs).
    /// Returns the new tokens of each prompt (an EOS token that stopped a sequence is included).
    /// Logits that are not finite (NaN or infinite weights, overflow) throw `DPOError.numeric`:
    /// no token is picked from them.
    public func generate(_ prompts: [[Int32]], config g: GenerationConfig) throws -> [[Int32]] {
        try g.validate()
        for (i, p) in prompts.enumerated() {
            if p.isEmpty { throw DPOError.invalidArgument("prompt \(i) is empty") }
            for (j, t) in p.enumerated() where t < 0 || Int(t) >= config.vocabSize {
                throw DPOError.invalidArgument("prompt \(i): token [\(j)] = \(t) is outside the vocabulary [0, \(config.vocabSize))")
            }
        }
        if prompts.isEmpty || g.maxNewTokens == 0 { return prompts.map { _ in [] } }
        try MemoryLimit.check(generationBytes(promptLengths: prompts.map(\.count), maxNewTokens: g.maxNewTokens),
                              "generating \(g.maxNewTokens) tokens for \(prompts.count) prompts")
        let eos = Set(g.eosTokenIds ?? config.eosTokenIds.map { Int32($0) })
        let a = attentionShape
        let caches = prompts.map { KVCache(layers: config.numHiddenLayers, kvWidth: a.kvWidth, capacity: $0.count + g.maxNewTokens) }
        var rng = Xoshiro256(seed: g.seed)
        var outputs = prompts.map { _ in [Int32]() }
        var active = Array(prompts.indices)
        // Prefill: each prompt through the cache; the last position's logits pick the first token.
        var logits = [Float](repeating: 0, count: config.vocabSize)
        var next = [Int32](repeating: 0, count: prompts.count)
        for i in prompts.indices {
            let l = try requireFiniteLogits(extend([caches[i]], tokens: [prompts[i]]), sequences: [i])
            next[i] = sample(l, 0, config: g, rng: &rng, scratch: &logits)
        }
        for _ in 0..<g.maxNewTokens {
            var still: [Int] = []
            for i in active {
                outputs[i].append(next[i])
                if !eos.contains(next[i]) && outputs[i].count < g.maxNewTokens { still.append(i) }
            }
            active = still
            if active.isEmpty { break }
            let l = try requireFiniteLogits(extend(active.map { caches[$0] }, tokens: active.map { [next[$0]] }),
                                            sequences: active)
            for (b, i) in active.enumerated() { next[i] = sample(l, b, config: g, rng: &rng, scratch: &logits) }
        }
        return outputs
    }

    /// `logits` [B, vocab] of the prompts `sequences[b]`, when every entry is finite.
    func requireFiniteLogits(_ logits: [Float], sequences: [Int]) throws -> [Float] {
        if let i = logits.firstIndex(where: { !$0.isFinite }) {
            let V = config.vocabSize
            throw DPOError.numeric("generate: logit \(i % V) of prompt \(sequences[i / V]) is \(logits[i]) (the weights or activations are not finite)")
        }
        return logits
    }

    /// Appends `tokens[b]` to `caches[b]` for every b and returns the logits [B, vocab] of each
    /// sequence's last new token. All new tokens of all sequences go through the linear layers as
    /// one matrix; attention runs per sequence against its cache.
    func extend(_ caches: [KVCache], tokens: [[Int32]]) throws -> [Float] {
        let c = config, lay = layout, a = attentionShape
        let H = c.hiddenSize, I = c.intermediateSize, eps = Float(c.rmsNormEps)
        var starts: [Int] = [], positions: [Int32] = [], flat: [Int32] = []
        for (b, t) in tokens.enumerated() {
            if caches[b].length + t.count > caches[b].capacity { throw DPOError.internal("KV cache overflow") }
            starts.append(flat.count)
            flat += t
            positions += (0..<t.count).map { Int32(caches[b].length + $0) }
        }
        let T = flat.count, B = tokens.count
        let p = UnsafePointer(parameters.pointer)
        let x = FloatBuffer(count: T * H), xn = FloatBuffer(count: T * H)
        let q = FloatBuffer(count: T * a.qWidth), k = FloatBuffer(count: T * a.kvWidth), v = FloatBuffer(count: T * a.kvWidth)
        let att = FloatBuffer(count: T * a.qWidth), gate = FloatBuffer(count: T * I), up = FloatBuffer(count: T * I)
        let cosT = FloatBuffer(count: T * a.headDim / 2), sinT = FloatBuffer(count: T * a.headDim / 2)
        let rstd = FloatBuffer(count: T)
        let maxContext = caches.map { $0.length }.max()! + tokens.map(\.count).max()!
        let scores = FloatBuffer(count: tokens.map(\.count).max()! * maxContext)
        positions.withUnsafeBufferPointer {
            ropeTables(cos: cosT.pointer, sin: sinT.pointer, positions: $0.baseAddress!, tokens: T, invFreq: invFreq)
        }
        for t in 0..<T { (x.pointer + t * H).update(from: p + lay.embed + Int(flat[t]) * H, count: H) }
        lora = try beginLoraPass(tokens: T, training: false)
        defer { lora = nil }
        for l in 0..<c.numHiddenLayers {
            let o = lay.layers[l]
            rmsnormForward(xn.pointer, rstd: rstd.pointer, x.pointer, weight: p + o.inputNorm, rows: T, dim: H, eps: eps)
            projectQKV(layer: o, index: l, xn: xn.pointer, q: q.pointer, k: k.pointer, v: v.pointer,
                       cos: cosT.pointer, sin: sinT.pointer, rows: T)
            for b in 0..<B {
                let cache = caches[b], n = tokens[b].count, past = cache.length, total = past + n
                let kc = cache.k[l].pointer, vc = cache.v[l].pointer
                (kc + past * a.kvWidth).update(from: k.pointer + starts[b] * a.kvWidth, count: n * a.kvWidth)
                (vc + past * a.kvWidth).update(from: v.pointer + starts[b] * a.kvWidth, count: n * a.kvWidth)
                cachedAttention(out: att.pointer + starts[b] * a.qWidth, q: q.pointer + starts[b] * a.qWidth,
                                k: kc, v: vc, newTokens: n, total: total, shape: a, scores: scores.pointer)
            }
            addOutputProjection(layer: o, index: l, attn: att.pointer, residual: x.pointer, rows: T)
            rmsnormForward(xn.pointer, rstd: rstd.pointer, x.pointer, weight: p + o.postNorm, rows: T, dim: H, eps: eps)
            addMLP(layer: o, index: l, xn: xn.pointer, gate: gate.pointer, up: up.pointer, hidden: gate.pointer,
                   residual: x.pointer, rows: T)
        }
        for b in 0..<B { caches[b].length += tokens[b].count }
        // Final norm and full-vocabulary logits of each sequence's last new token.
        let last = (0..<B).map { Int32(starts[$0] + tokens[$0].count - 1) }
        let hn = FloatBuffer(count: B * H)
        last.withUnsafeBufferPointer {
            rmsnormForward(hn.pointer, rstd: rstd.pointer, x.pointer, weight: p + lay.finalNorm, rows: B, dim: H,
                           eps: eps, gather: $0.baseAddress!)
        }
        var logits = [Float](repeating: 0, count: B * c.vocabSize)
        logits.withUnsafeMutableBufferPointer {
            sgemm(transB: true, m: B, n: c.vocabSize, k: H, a: hn.pointer, lda: H, b: p + lay.lmHead, ldb: H,
                  c: $0.baseAddress!, ldc: c.vocabSize)
        }
        return logits
    }
}

/// Attention of n new query tokens (the last n of `total` cached positions) against the cache:
/// query i sees cached keys 0 ... total - n + i.
func cachedAttention(out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                     v: UnsafePointer<Float>, newTokens n: Int, total: Int, shape a: AttentionShape,
                     scores: UnsafeMutablePointer<Float>) {
    let group = a.heads / a.kvHeads, past = total - n
    for h in 0..<a.heads {
        let g = h / group
        let qh = q + h * a.headDim, kg = k + g * a.headDim, vg = v + g * a.headDim
        sgemm(transB: true, m: n, n: total, k: a.headDim, alpha: a.scale, a: qh, lda: a.qWidth,
              b: kg, ldb: a.kvWidth, c: scores, ldc: total)
        for i in 0..<n {
            let row = scores + i * total, visible = past + i + 1
            var m = -Float.infinity
            for j in 0..<visible where row[j] > m { m = row[j] }
            var sum: Float = 0
            for j in 0..<visible { let e = expf(row[j] - m); row[j] = e; sum += e }
            for j in 0..<visible { row[j] /= sum }
            for j in visible..<total { row[j] = 0 }
        }
        sgemm(m: n, n: a.headDim, k: total, a: scores, lda: total, b: vg, ldb: a.kvWidth,
              c: out + h * a.headDim, ldc: a.qWidth)
    }
}

/// Picks the next token from row `b` of `logits`: argmax when temperature is 0 (first maximum,
/// as torch), else transformers' order: temperature, top-k, top-p, then a draw.
func sample(_ logits: [Float], _ b: Int, config g: GenerationConfig, rng: inout Xoshiro256,
            scratch: inout [Float]) -> Int32 {
    let V = scratch.count
    for v in 0..<V { scratch[v] = logits[b * V + v] }
    if g.temperature == 0 {
        var best = 0
        for v in 1..<V where scratch[v] > scratch[best] { best = v }
        return Int32(best)
    }
    // Shifted by the largest logit before dividing by the temperature (softmax is unchanged):
    // z / T alone overflows to inf for a tiny T (1e-310), and exp(inf - inf) is NaN.
    let top = Double(scratch.max() ?? 0)
    var z = scratch.map { (Double($0) - top) / g.temperature }
    if g.topK > 0 && g.topK < V {
        let kth = z.sorted(by: >)[g.topK - 1]
        for v in 0..<V where z[v] < kth { z[v] = -.infinity }
    }
    let m = z.max()!
    var p = z.map { exp($0 - m) }
    let s = p.reduce(0, +)
    for v in 0..<V { p[v] /= s }
    if g.topP < 1 {
        // Drop the least likely tokens whose cumulative probability stays <= 1 - top_p (keep >= 1).
        let order = (0..<V).sorted { p[$0] < p[$1] }
        var cum = 0.0
        for (rank, v) in order.enumerated() where rank < V - 1 {
            cum += p[v]
            if cum <= 1 - g.topP { p[v] = 0 } else { break }
        }
        let s2 = p.reduce(0, +)
        for v in 0..<V { p[v] /= s2 }
    }
    var u = rng.nextUniform()
    for v in 0..<V {
        u -= p[v]
        if u < 0 { return Int32(v) }
    }
    return Int32(p.lastIndex { $0 > 0 } ?? V - 1)
}

extension LlamaModel {
    /// What `generate` allocates, in Double so that no size can overflow before the check: the
    /// KV caches, the prefill's scores (longest prompt x longest context), the logits, and the
    /// prefill's one-layer activations.
    func generationBytes(promptLengths: [Int], maxNewTokens: Int) -> Double {
        let c = config
        let kv = Double(c.numKeyValueHeads) * Double(c.resolvedHeadDim)
        let cached = promptLengths.reduce(0.0) { $0 + Double($1) + Double(maxNewTokens) }
        let caches = cached * kv * 2 * Double(c.numHiddenLayers)
        let longest = Double(promptLengths.max() ?? 0) + Double(maxNewTokens)
        let logits = Double(promptLengths.count) * Double(c.vocabSize)
        let h = Double(c.hiddenSize), q = Double(c.numAttentionHeads) * Double(c.resolvedHeadDim)
        let prefill = longest * (4 * h + 2 * q + 2 * kv + 2 * Double(c.intermediateSize) + Double(c.resolvedHeadDim))
        let scores = Double(promptLengths.max() ?? 0) * longest
        return (caches + scores + logits + prefill) * 4
    }
}
