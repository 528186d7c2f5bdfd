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
    let capacity: Int, kvWidth: Int
    var length = 0

    init(layers: Int, kvWidth: Int, capacity: Int) {
        self.capacity = capacity; self.kvWidth = kvWidth
        k = (0..<layers).map { _ in FloatBuffer(count: capacity * kvWidth) }
        v = (0..<layers).map { _ in FloatBuffer(count: capacity * kvWidth) }
    }
}

extension LlamaModel {
    /// Continues each prompt autoregressively with a KV cache: every new token costs one
    /// single-token forward per sequence (the sequences' tokens share each layer's GEMMs).
    /// Identical prompts are prefilled once (their caches are copies) and distinct ones together,
    /// so sampling several answers to one prompt costs one prefill. The result does not depend on
    /// how prompts are grouped: tokens are drawn in prompt order at each step.
    /// Returns the new tokens of each prompt (an EOS token that stopped a sequence is included).
    /// Logits that are not finite (NaN or infinite weights, overflow) throw `DPOError.numeric`:
    /// no token is picked from them. With `bf16` set, every product (linear layers, attention
    /// against the cache, LM head) takes bf16 inputs as in training.
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
        let a = attentionShape, V = config.vocabSize
        let caches = prompts.map { KVCache(layers: config.numHiddenLayers, kvWidth: a.kvWidth, capacity: $0.count + g.maxNewTokens) }
        let work = try GenerationWorkspace(model: self, promptLengths: prompts.map(\.count), maxNewTokens: g.maxNewTokens)
        var rng = Xoshiro256(seed: g.seed)
        var sampler = TokenSampler(vocabSize: V)
        var outputs = prompts.map { _ in [Int32]() }
        var active = Array(prompts.indices)

        // Prefill: each distinct prompt once, in groups of about `prefillTokens` tokens; a repeated
        // prompt gets a copy of the first one's cache. The last position's logits pick the first token.
        var first = [Int](repeating: 0, count: prompts.count), seen: [[Int32]: Int] = [:]
        for (i, p) in prompts.enumerated() { first[i] = seen[p] ?? i; if seen[p] == nil { seen[p] = i } }
        let distinct = prompts.indices.filter { first[$0] == $0 }
        let firstLogits = try FloatBuffer(checkedCount: distinct.count * V, for: "the prompts' logits")
        var logitsRow = [Int](repeating: 0, count: prompts.count)
        var lo = 0
        while lo < distinct.count {
            var hi = lo + 1, tokens = prompts[distinct[lo]].count
            while hi < distinct.count && tokens + prompts[distinct[hi]].count <= GenerationWorkspace.prefillTokens {
                tokens += prompts[distinct[hi]].count; hi += 1
            }
            let group = Array(distinct[lo..<hi])
            let l = try extend(group.map { caches[$0] }, tokens: group.map { prompts[$0] }, work: work)
            try requireFiniteLogits(l, rows: group.count, sequences: group)
            (firstLogits.pointer + lo * V).update(from: l, count: group.count * V)
            for (r, i) in group.enumerated() { logitsRow[i] = lo + r }
            lo = hi
        }
        var next = [Int32](repeating: 0, count: prompts.count)
        for i in prompts.indices {
            if first[i] != i { caches[i].copyPrefix(of: caches[first[i]]); logitsRow[i] = logitsRow[first[i]] }
            next[i] = sampler.sample(firstLogits.pointer + logitsRow[i] * V, config: g, rng: &rng)
        }
        for _ in 0..<g.maxNewTokens {
            var still: [Int] = []
            for i in active {
                outputs[i].append(next[i])
                if !eos.contains(next[i]) && outputs[i].count < g.maxNewTokens { still.append(i) }
            }
            active = still
            if active.isEmpty { break }
            let l = try extend(active.map { caches[$0] }, tokens: active.map { [next[$0]] }, work: work)
            try requireFiniteLogits(l, rows: active.count, sequences: active)
            for (b, i) in active.enumerated() { next[i] = sampler.sample(l + b * V, config: g, rng: &rng) }
        }
        return outputs
    }

    /// Throws unless every entry of `logits` [rows, vocab] (row b: prompt `sequences[b]`) is finite.
    func requireFiniteLogits(_ logits: UnsafePointer<Float>, rows: Int, sequences: [Int]) throws {
        let V = config.vocabSize
        for i in 0..<rows * V where !logits[i].isFinite {
            throw DPOError.numeric("generate: logit \(i % V) of prompt \(sequences[i / V]) is \(logits[i]) (the weights or activations are not finite)")
        }
    }

    /// Appends `tokens[b]` to `caches[b]` for every b and returns the logits [B, vocab] of each
    /// sequence's last new token (in `work`, valid until the next call). All new tokens of all
    /// sequences go through the linear layers as one matrix; attention runs per sequence against
    /// its cache, the sequences on parallel workers.
    func extend(_ caches: [KVCache], tokens: [[Int32]], work: GenerationWorkspace) throws -> UnsafePointer<Float> {
        let c = config, lay = layout, a = attentionShape
        let H = c.hiddenSize, eps = Float(c.rmsNormEps)
        var starts: [Int] = [], positions: [Int32] = [], flat: [Int32] = []
        for (b, t) in tokens.enumerated() {
            if caches[b].length + t.count > caches[b].capacity { throw DPOError.internal("KV cache overflow") }
            starts.append(flat.count)
            flat += t
            positions += (0..<t.count).map { Int32(caches[b].length + $0) }
        }
        let T = flat.count, B = tokens.count
        let longestNew = tokens.map(\.count).max() ?? 0
        let longestContext = zip(caches, tokens).map { $0.length + $1.count }.max() ?? 0
        if T > work.rows || B > work.rows || longestNew * longestContext > work.scoresPerWorker {
            throw DPOError.internal("generation workspace too small")
        }
        let p = UnsafePointer(parameters.pointer)
        let x = work.x.pointer, xn = work.xn.pointer, q = work.q.pointer, k = work.k.pointer, v = work.v.pointer
        let att = work.att.pointer, cosT = work.cos.pointer, sinT = work.sin.pointer, rstd = work.rstd.pointer
        positions.withUnsafeBufferPointer {
            ropeTables(cos: cosT, sin: sinT, positions: $0.baseAddress!, tokens: T, invFreq: invFreq)
        }
        flat.withUnsafeBufferPointer { embed($0.baseAddress!, count: T, into: x) }
        lora = try beginLoraPass(tokens: T, training: false)
        defer { lora = nil }
        for l in 0..<c.numHiddenLayers {
            let o = lay.layers[l]
            rmsnormForward(xn, rstd: rstd, x, weight: p + o.inputNorm, rows: T, dim: H, eps: eps)
            projectQKV(layer: o, index: l, xn: xn, q: q, k: k, v: v, cos: cosT, sin: sinT, rows: T)
            // One sequence: attention's products may use OpenBLAS's threads. Several: one task per
            // sequence, each product on its worker's thread.
            func attend(_ b: Int, scores: UnsafeMutablePointer<Float>, tally: UnsafeMutablePointer<GemmTally>?) {
                let cache = caches[b], n = tokens[b].count, past = cache.length
                let kc = cache.k[l].pointer, vc = cache.v[l].pointer
                (kc + past * a.kvWidth).update(from: k + starts[b] * a.kvWidth, count: n * a.kvWidth)
                (vc + past * a.kvWidth).update(from: v + starts[b] * a.kvWidth, count: n * a.kvWidth)
                if n == 1 && !a.bf16 {
                    singleTokenAttention(out: att + starts[b] * a.qWidth, q: q + starts[b] * a.qWidth, k: kc, v: vc,
                                         total: past + 1, shape: a, scores: scores)
                } else {
                    cachedAttention(out: att + starts[b] * a.qWidth, q: q + starts[b] * a.qWidth, k: kc, v: vc,
                                    newTokens: n, total: past + n, shape: a, scores: scores, tally: tally)
                }
            }
            if B == 1 {
                attend(0, scores: work.scores.pointer, tally: nil)
            } else {
                var tallies = [GemmTally](repeating: GemmTally(), count: taskWorkers(B))
                tallies.withUnsafeMutableBufferPointer { tally in
                    parallelTasks(B) { worker, b in
                        attend(b, scores: work.scores.pointer + worker * work.scoresPerWorker, tally: tally.baseAddress! + worker)
                    }
                }
                GemmCounter.merge(tallies)
            }
            addOutputProjection(layer: o, index: l, attn: att, residual: x, rows: T)
            rmsnormForward(xn, rstd: rstd, x, weight: p + o.postNorm, rows: T, dim: H, eps: eps)
            addMLP(layer: o, index: l, xn: xn, gate: work.gate.pointer, up: work.up.pointer, hidden: work.gate.pointer,
                   residual: x, rows: T)
        }
        for b in 0..<B { caches[b].length += tokens[b].count }
        // Final norm and full-vocabulary logits of each sequence's last new token.
        let last = (0..<B).map { Int32(starts[$0] + tokens[$0].count - 1) }
        last.withUnsafeBufferPointer {
            rmsnormForward(xn, rstd: rstd, x, weight: p + lay.finalNorm, rows: B, dim: H, eps: eps, gather: $0.baseAddress!)
        }
        frozenLinearForward(work.logits.pointer, xn, weight: frozenHead(), rows: B, inFeatures: H, outFeatures: c.vocabSize,
                            accumulate: false, bf16: bf16)
        return UnsafePointer(work.logits.pointer)
    }
}

/// The buffers of `extend`, allocated once per `generate` for its largest call: a prefill group
/// (at most `prefillTokens` tokens, or one longer prompt) or a decoding step (one token per sequence).
final class GenerationWorkspace {
    /// Tokens of distinct prompts prefilled together (one longer prompt goes alone).
    static let prefillTokens = 512
    let rows: Int, scoresPerWorker: Int
    let x, xn, q, k, v, att, gate, up, cos, sin, rstd: FloatBuffer
    let scores: FloatBuffer
    let logits: FloatBuffer

    init(model: LlamaModel, promptLengths: [Int], maxNewTokens: Int) throws {
        let c = model.config, a = model.attentionShape
        let longest = promptLengths.max() ?? 0
        let rows = GenerationWorkspace.rows(promptLengths: promptLengths)
        self.rows = rows
        // A prefill group's prompt against itself, or one new token against the longest context.
        scoresPerWorker = max(longest * longest, longest + maxNewTokens)
        let workers = Threads.count
        let buffer = { (width: Int, what: String) throws -> FloatBuffer in
            try FloatBuffer(checkedCount: rows * width, for: "generation: \(what)")
        }
        x = try buffer(c.hiddenSize, "hidden states"); xn = try buffer(c.hiddenSize, "normed states")
        q = try buffer(a.qWidth, "queries"); k = try buffer(a.kvWidth, "keys"); v = try buffer(a.kvWidth, "values")
        att = try buffer(a.qWidth, "attention"); gate = try buffer(c.intermediateSize, "MLP gate")
        up = try buffer(c.intermediateSize, "MLP up")
        cos = try buffer(a.headDim / 2, "RoPE"); sin = try buffer(a.headDim / 2, "RoPE"); rstd = try buffer(1, "norms")
        scores = try FloatBuffer(checkedCount: workers * scoresPerWorker, for: "generation: attention scores")
        logits = try FloatBuffer(checkedCount: promptLengths.count * c.vocabSize, for: "generation: logits")
    }

    /// Rows of the largest `extend` call: a decoding step's sequences or a prefill group's tokens.
    static func rows(promptLengths: [Int]) -> Int {
        let prefill = min(promptLengths.reduce(0, +), max(prefillTokens, promptLengths.max() ?? 0))
        return max(promptLengths.count, prefill)
    }
}

extension KVCache {
    /// Copies `other`'s cached positions (a prompt's prefill) into this empty cache.
    func copyPrefix(of other: KVCache) {
        for l in k.indices {
            k[l].pointer.update(from: other.k[l].pointer, count: other.length * kvWidth)
            v[l].pointer.update(from: other.v[l].pointer, count: other.length * kvWidth)
        }
        length = other.length
    }
}

/// Attention of n new query tokens (the last n of `total` cached positions) against the cache:
/// query i sees cached keys 0 ... total - n + i. With a `tally`, the products run on the calling
/// thread (a parallel worker's) and are counted there. Products in bf16 when `shape.bf16`.
func cachedAttention(out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                     v: UnsafePointer<Float>, newTokens n: Int, total: Int, shape a: AttentionShape,
                     scores: UnsafeMutablePointer<Float>, tally: UnsafeMutablePointer<GemmTally>? = nil) {
    let group = a.heads / a.kvHeads, past = total - n, bf16 = a.bf16
    func product(transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if let tally {
            gemmOnCallingThread(bf16: bf16, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                                b: b, ldb: ldb, c: c, ldc: ldc, tally: tally)
        } else {
            gemm(bf16: bf16, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                 c: c, ldc: ldc)
        }
    }
    for h in 0..<a.heads {
        let g = h / group
        let qh = q + h * a.headDim, kg = k + g * a.headDim, vg = v + g * a.headDim
        product(transB: true, m: n, n: total, k: a.headDim, alpha: a.scale, a: qh, lda: a.qWidth,
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
        product(transB: false, m: n, n: a.headDim, k: total, alpha: 1, a: scores, lda: total, b: vg, ldb: a.kvWidth,
                c: out + h * a.headDim, ldc: a.qWidth)
    }
}

/// Attention of one new query token (the last of `total` cached positions) against the cache,
/// as `cachedAttention` computes it for n = 1, in plain loops: a decoding step would otherwise make
/// two tiny matrix products per head and sequence, whose call overhead exceeds their arithmetic.
/// fp32 only: with `shape.bf16` the decoding step takes `cachedAttention`, whose products round
/// their inputs to bf16 as training's do.
func singleTokenAttention(out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                          v: UnsafePointer<Float>, total: Int, shape a: AttentionShape,
                          scores: UnsafeMutablePointer<Float>) {
    let group = a.heads / a.kvHeads, d = a.headDim
    for h in 0..<a.heads {
        let g = h / group
        let qh = q + h * d, kg = k + g * d, vg = v + g * d
        var m = -Float.infinity
        for j in 0..<total {
            let s = a.scale * dot(qh, kg + j * a.kvWidth, d)
            scores[j] = s
            if s > m { m = s }
        }
        var sum: Float = 0
        for j in 0..<total { let e = expf(scores[j] - m); scores[j] = e; sum += e }
        let o = out + h * d
        o.update(repeating: 0, count: d)
        for j in 0..<total {
            let w = scores[j] / sum, vj = vg + j * a.kvWidth
            for i in 0..<d { o[i] += w * vj[i] }
        }
    }
}

/// sum_i x[i] y[i] over n floats, eight lanes at a time.
@inline(__always)
private func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    while i + 8 <= n {
        acc += UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
        i += 8
    }
    var s = acc.sum()
    while i < n { s += x[i] * y[i]; i += 1 }
    return s
}

/// Picks next tokens from logits rows, reusing its buffers across calls (a row is the whole
/// vocabulary: fresh arrays per token would cost more than the draw).
struct TokenSampler {
    private var z: [Double], p: [Double]

    init(vocabSize: Int) {
        z = [Double](repeating: 0, count: vocabSize)
        p = [Double](repeating: 0, count: vocabSize)
    }

    /// The next token from `logits` (one row): argmax when temperature is 0 (first maximum, as
    /// torch), else transformers' order: temperature, top-k, top-p, then a draw.
    mutating func sample(_ logits: UnsafePointer<Float>, config g: GenerationConfig, rng: inout Xoshiro256) -> Int32 {
        let V = z.count
        if g.temperature == 0 {
            var best = 0
            for v in 1..<V where logits[v] > logits[best] { best = v }
            return Int32(best)
        }
        // Shifted by the largest logit before dividing by the temperature (softmax is unchanged):
        // z / T alone overflows to inf for a tiny T (1e-310), and exp(inf - inf) is NaN.
        var largest = logits[0]
        for v in 1..<V where logits[v] > largest { largest = logits[v] }
        let top = Double(largest)
        for v in 0..<V { z[v] = (Double(logits[v]) - top) / g.temperature }
        if g.topK > 0 && g.topK < V {
            let kth = z.sorted(by: >)[g.topK - 1]
            for v in 0..<V where z[v] < kth { z[v] = -.infinity }
        }
        var m = z[0]
        for v in 1..<V where z[v] > m { m = z[v] }
        var s = 0.0
        for v in 0..<V { p[v] = exp(z[v] - m); s += p[v] }
        for v in 0..<V { p[v] /= s }
        if g.topP < 1 {
            // Drop the least likely tokens whose cumulative probability stays <= 1 - top_p (keep >= 1).
            let order = (0..<V).sorted { p[$0] < p[$1] }
            var cum = 0.0
            for (rank, v) in order.enumerated() where rank < V - 1 {
                cum += p[v]
                if cum <= 1 - g.topP { p[v] = 0 } else { break }
            }
            var s2 = 0.0
            for v in 0..<V { s2 += p[v] }
            for v in 0..<V { p[v] /= s2 }
        }
        var u = rng.nextUniform()
        for v in 0..<V {
            u -= p[v]
            if u < 0 { return Int32(v) }
        }
        return Int32(p.lastIndex { $0 > 0 } ?? V - 1)
    }
}

extension LlamaModel {
    /// What `generate` allocates, in Double so that no size can overflow before the check: the
    /// KV caches, the prompts' first logits and a step's logits, and the workspace of its largest
    /// `extend` call (one layer's activations for its rows, each worker's attention scores).
    func generationBytes(promptLengths: [Int], maxNewTokens: Int) -> Double {
        let c = config
        let kv = Double(c.numKeyValueHeads) * Double(c.resolvedHeadDim)
        let cached = promptLengths.reduce(0.0) { $0 + Double($1) + Double(maxNewTokens) }
        let caches = cached * kv * 2 * Double(c.numHiddenLayers)
        let logits = 2 * Double(promptLengths.count) * Double(c.vocabSize)
        let h = Double(c.hiddenSize), q = Double(c.numAttentionHeads) * Double(c.resolvedHeadDim)
        let rows = Double(GenerationWorkspace.rows(promptLengths: promptLengths))
        let activations = rows * (2 * h + 2 * q + 2 * kv + 2 * Double(c.intermediateSize) + Double(c.resolvedHeadDim) + 1)
        let longest = Double(promptLengths.max() ?? 0)
        let scores = Double(Threads.count) * max(longest * longest, longest + Double(maxNewTokens))
        return (caches + logits + activations + scores) * 4
    }
}
