/// SentencePiece-style BPE vocabularies in GGUF (`tokenizer.ggml.model` "llama": Llama 2,
/// TinyLlama, Mistral): tokens with scores and no merges. The tokenizer is the one transformers
/// builds for such a file (its `LlamaTokenizer`, integrations/gguf): BPE with byte fallback over
/// merges recovered from the scores, the Metaspace pre-tokenizer (▁ for spaces, prepended to the
/// text's first piece, no splitting), and the decoders ▁ -> space, byte fallback, fuse, strip one
/// leading space. llama.cpp's own SentencePiece tokenizer (llm_tokenizer_spm) merges by score too.
enum SentencePieceBPE {
    /// The merges a vocabulary with scores implies (transformers' `generate_merges`): every split
    /// of every token into two tokens of the vocabulary, ordered by the merged token's score
    /// (highest first), then by the longer left part, then the longer right part; ties keep the
    /// token order, and a token's splits are ordered by (left id, right id).
    static func merges(tokens: [String], scores: [Float]) -> [(String, String)] {
        var ids: [String: Int] = [:]
        for (i, t) in tokens.enumerated() { ids[t] = i }
        // Python's dict(zip(tokens, scores)): first position of a token, last score.
        var order: [String] = [], score: [String: Float] = [:]
        for (t, s) in zip(tokens, scores) {
            if score.updateValue(s, forKey: t) == nil { order.append(t) }
        }
        struct Candidate { var left: String; var right: String; var score: Float; var leftLength: Int; var rightLength: Int; var index: Int }
        var candidates: [Candidate] = []
        for token in order {
            let scalars = Array(token.unicodeScalars)
            if scalars.count < 2 { continue }
            var local: [(String, String, Int, Int, Int, Int)] = []
            for cut in 1..<scalars.count {
                var l = String.UnicodeScalarView(), r = String.UnicodeScalarView()
                l.append(contentsOf: scalars[..<cut]); r.append(contentsOf: scalars[cut...])
                let left = String(l), right = String(r)
                if let li = ids[left], let ri = ids[right] { local.append((left, right, li, ri, cut, scalars.count - cut)) }
            }
            local.sort { ($0.2, $0.3) < ($1.2, $1.3) }
            for m in local {
                candidates.append(Candidate(left: m.0, right: m.1, score: score[token] ?? 0, leftLength: m.4,
                                            rightLength: m.5, index: candidates.count))
            }
        }
        // sorted(key=(score, len(left), len(right)), reverse=True), which is stable.
        candidates.sort { a, b in
            if a.score != b.score { return a.score > b.score }
            if a.leftLength != b.leftLength { return a.leftLength > b.leftLength }
            if a.rightLength != b.rightLength { return a.rightLength > b.rightLength }
            return a.index < b.index
        }
        return candidates.map { ($0.left, $0.right) }
    }

    /// The pre-tokenizer and decoder of such a vocabulary; `addSpacePrefix` is
    /// `tokenizer.ggml.add_space_prefix` (default true).
    static func pipeline(addSpacePrefix: Bool) -> (PreTokenizer, TokenDecoder) {
        let pre = PreTokenizer.metaspace(replacement: "\u{2581}", prependScheme: addSpacePrefix ? .first : .never, split: false)
        var steps: [TokenDecoder] = [.replace(pattern: "\u{2581}", content: " "), .byteFallback, .fuse]
        if addSpacePrefix { steps.append(.strip(content: " ", start: 1, stop: 0)) }
        return (pre, .sequence(steps))
    }
}
