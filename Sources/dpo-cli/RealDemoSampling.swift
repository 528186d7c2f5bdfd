import DPO
import Foundation

/// The real demo's rule, decided on an answer's token ids alone (no reward model): an answer is
/// short and complete when it ends with EOS within `limit` tokens (the EOS counted) and has text
/// before that EOS. Anything else (cut off at the limit, or nothing but an EOS) is not.
struct ConcisenessRule {
    let limit: Int
    let eos: Int32
    let tokenizer: Tokenizer

    func accepts(_ ids: [Int32]) -> Bool {
        guard ids.count >= 2, ids.count <= limit, ids.last == eos else { return false }
        let text = (try? tokenizer.decode(Array(ids.dropLast()), skipSpecialTokens: true)) ?? ""
        return !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    }

    /// Preference pairs of one prompt's sampled answers: the chosen answer is one the rule
    /// accepts, the rejected one it does not. Pair j takes accepted answer j and refused answer j,
    /// each list taken round again when it is the shorter one, so every answer is used and none
    /// twice in a row: max(accepted, refused) pairs (none if either list is empty), at most `maxPairs`.
    func pairs(prompt: [Int32], answers: [[Int32]], maxPairs: Int) -> [PreferencePair] {
        let good = answers.filter(accepts), bad = answers.filter { !accepts($0) && !$0.isEmpty }
        if good.isEmpty || bad.isEmpty { return [] }
        return (0..<min(maxPairs, max(good.count, bad.count))).map { j in
            PreferencePair(promptIds: prompt, chosenIds: good[j % good.count], rejectedIds: bad[j % bad.count])
        }
    }
}

/// Samples answers of a model to chat prompts, a chunk of sequences at a time (one batched
/// KV-cached generation per chunk), and reports the speed.
struct AnswerSampler {
    var generation: GenerationConfig
    /// Sequences generated together.
    var chunk: Int
    /// Generated tokens and seconds so far (all calls).
    private(set) var tokens = 0
    private(set) var seconds = 0.0

    var tokensPerSecond: Double { seconds > 0 ? Double(tokens) / seconds : 0 }

    /// `perPrompt` answers to each prompt: result[i][j] is prompt i's j-th answer (its new tokens,
    /// a stopping EOS included). Chunk c is sampled with seed `seed + c`.
    mutating func sample(_ model: LlamaModel, prompts: [[Int32]], perPrompt: Int, seed: UInt64, label: String) throws -> [[[Int32]]] {
        let jobs = prompts.indices.flatMap { i in [Int](repeating: i, count: perPrompt) }
        var answers = prompts.map { _ in [[Int32]]() }
        let start = now(), tokensBefore = tokens
        var done = 0
        while done < jobs.count {
            let part = Array(jobs[done..<min(done + chunk, jobs.count)])
            var g = generation
            g.seed = seed &+ UInt64(done / chunk)
            let out = try model.generate(part.map { prompts[$0] }, config: g)
            for (i, ids) in zip(part, out) { answers[i].append(ids) }
            tokens += out.reduce(0) { $0 + $1.count }
            done += part.count
            let elapsed = now() - start
            print(String(format: "  %@: %d/%d answers, %.0f new tokens/s", label, done, jobs.count,
                         Double(tokens - tokensBefore) / max(elapsed, 1e-9)))
            fflush(stdout)
        }
        seconds += now() - start
        return answers
    }
}

/// What the evaluation measures of one model's answers to the held-out prompts.
struct AnswerStats {
    /// Share of answers the rule accepts.
    var ruleRate = 0.0
    /// Mean answer length in tokens (an EOS counted; answers cut off at the limit count the limit).
    var meanLength = 0.0
    /// Mean per-token log-prob of the answers' text (EOS excluded) under the reference model:
    /// the text tokens' summed log-probs over their count.
    var referenceLogProbPerToken = 0.0
    /// The same over the answers the rule accepts only (short answers score lower per token:
    /// their first words, the least predictable ones, weigh more).
    var acceptedLogProbPerToken = 0.0

    /// `referenceLogProbs[i][j]`: the reference's log-probs of answer i's tokens.
    init(answers: [[Int32]], rule: ConcisenessRule, referenceLogProbs: [[Double]]) {
        let n = Double(max(answers.count, 1))
        ruleRate = Double(answers.filter(rule.accepts).count) / n
        meanLength = Double(answers.reduce(0) { $0 + $1.count }) / n
        var sum = 0.0, count = 0, acceptedSum = 0.0, acceptedCount = 0
        for (a, lp) in zip(answers, referenceLogProbs) {
            let text = a.last == rule.eos ? lp.dropLast() : lp[...]
            sum += text.reduce(0, +); count += text.count
            if rule.accepts(a) { acceptedSum += text.reduce(0, +); acceptedCount += text.count }
        }
        referenceLogProbPerToken = sum / Double(max(count, 1))
        acceptedLogProbPerToken = acceptedSum / Double(max(acceptedCount, 1))
    }
}

/// Per-token log-probs of sampled answers under `model`: result[i][j][t] = log p(answers[i][j][t] |
/// prompts[i], answers[i][j][..<t]). Each prompt is computed once, its answers packed as segments
/// that see it (PackedTokens' shared prompt), `promptsPerBatch` prompts per forward.
func answerTokenLogProbs(_ model: LlamaModel, prompts: [[Int32]], answers: [[[Int32]]],
                         promptsPerBatch: Int = 8) throws -> [[[Double]]] {
    var result: [[[Double]]] = []
    var lo = 0
    while lo < prompts.count {
        let hi = min(lo + promptsPerBatch, prompts.count)
        var tokens: [Int32] = [], positions: [Int32] = [], segments: [PackedTokens.Segment] = []
        var rows: [Int32] = [], labels: [Int32] = []
        for i in lo..<hi {
            let prompt = prompts[i], parent = segments.count, promptEnd = tokens.count + prompt.count
            segments.append(.init(start: tokens.count, count: prompt.count))
            tokens += prompt; positions += (0..<prompt.count).map { Int32($0) }
            for answer in answers[i] where !answer.isEmpty {
                let start = tokens.count
                segments.append(.init(start: start, count: answer.count, parent: parent))
                tokens += answer; positions += (0..<answer.count).map { Int32(prompt.count + $0) }
                for (t, label) in answer.enumerated() {
                    rows.append(Int32(t == 0 ? promptEnd - 1 : start + t - 1)); labels.append(label)
                }
            }
        }
        let out = try model.forward(PackedTokens(tokens: tokens, positions: positions, segments: segments),
                                    head: HeadQuery(rows: rows, labels: labels), keepActivations: false)
        if let bad = out.logps.first(where: { !$0.isFinite }) {
            throw CLIError("a log-prob of the answers is \(bad) (the model's weights or activations are not finite)")
        }
        var r = 0
        for i in lo..<hi {
            result.append(answers[i].map { answer in
                defer { r += answer.count }
                return (0..<answer.count).map { Double(out.logps[r + $0]) }
            })
        }
        lo = hi
    }
    return result
}
