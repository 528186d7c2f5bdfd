extension LlamaModel {
    /// Summed completion log-probs of (prompt, completion) token sequences, one per item:
    /// sum_j log p(completion[j] | prompt, completion[..<j]). Every completion token needs a
    /// preceding token, so prompts must not be empty. No activations are kept. Non-finite results
    /// (NaN or infinite weights, overflowing logits) throw `DPOError.numeric`.
    public func sequenceLogProbs(_ items: [(prompt: [Int32], completion: [Int32])]) throws -> [Double] {
        if items.isEmpty { return [] }
        try MemoryLimit.checkBatch(tokens: items.reduce(0) { $0 + $1.prompt.count + $1.completion.count }, "this batch")
        var sequences: [[Int32]] = [], rows: [Int32] = [], labels: [Int32] = [], owner: [Int] = []
        var start = 0
        for (i, item) in items.enumerated() {
            if item.prompt.isEmpty {
                throw DPOError.invalidArgument("item \(i): prompt is empty (the first completion token needs a token before it)")
            }
            if item.completion.isEmpty { throw DPOError.invalidArgument("item \(i): completion is empty") }
            for (name, ids) in [("prompt_ids", item.prompt), ("completion_ids", item.completion)] {
                for (j, t) in ids.enumerated() where t < 0 || Int(t) >= config.vocabSize {
                    throw DPOError.invalidArgument("item \(i): \(name)[\(j)] = \(t) is outside the vocabulary [0, \(config.vocabSize))")
                }
            }
            for (j, t) in item.completion.enumerated() {
                rows.append(Int32(start + item.prompt.count - 1 + j)); labels.append(t); owner.append(i)
            }
            sequences.append(item.prompt + item.completion)
            start += item.prompt.count + item.completion.count
        }
        let out = try forward(PackedTokens(sequences: sequences), head: HeadQuery(rows: rows, labels: labels),
                              keepActivations: false)
        try out.requireFinite("sequence_logps")
        var sums = [Double](repeating: 0, count: items.count)
        for (r, i) in owner.enumerated() { sums[i] += Double(out.logps[r]) }
        return sums
    }
}
