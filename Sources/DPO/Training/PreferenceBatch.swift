/// One preference pair as token ids (TRL's `prompt_ids`, `chosen_ids`, `rejected_ids`), with
/// optional precomputed reference log-prob sums.
public struct PreferencePair: Equatable, Sendable {
    public var promptIds: [Int32]
    public var chosenIds: [Int32]
    public var rejectedIds: [Int32]
    public var refChosenLogps: Double?
    public var refRejectedLogps: Double?

    public init(promptIds: [Int32], chosenIds: [Int32], rejectedIds: [Int32],
                refChosenLogps: Double? = nil, refRejectedLogps: Double? = nil) {
        self.promptIds = promptIds; self.chosenIds = chosenIds; self.rejectedIds = rejectedIds
        self.refChosenLogps = refChosenLogps; self.refRejectedLogps = refRejectedLogps
    }
}

/// One (prompt, completion) sequence after truncation, as TRL's collator builds it: the tokens and
/// a completion mask. Token t (t >= 1) is scored when mask[t] is 1; it is predicted by row t - 1.
struct MaskedSequence {
    var tokens: [Int32]
    var promptLength: Int   // tokens[0..<promptLength] have mask 0
    var completionLength: Int { tokens.count - promptLength }
    /// TRL's `completion_mask.sum()` (counts a completion token at position 0 too).
    var maskedTokens: Int { completionLength }
    /// Tokens whose log-prob is summed (mask 1 at positions >= 1).
    var scoredTokens: Int { promptLength > 0 ? completionLength : max(completionLength - 1, 0) }

    /// prompt ++ completion truncated to `maxLength` (TRL's collator slices the joined sequence).
    init(prompt: [Int32], completion: [Int32], maxLength: Int?, mode: TruncationMode) {
        var tokens = prompt + completion
        var promptLength = prompt.count
        if let m = maxLength, tokens.count > m {
            switch mode {
            case .keepStart:
                tokens = Array(tokens.prefix(m))
                promptLength = min(promptLength, m)
            case .keepEnd:
                let cut = tokens.count - m
                tokens = Array(tokens.suffix(m))
                promptLength = max(promptLength - cut, 0)
            }
        }
        self.tokens = tokens
        self.promptLength = promptLength
    }
}

/// How a preference batch is laid out for the forward.
public enum PreferencePacking: String, Sendable {
    /// The prompt once, the chosen and rejected completions attending to it; the LM head only on
    /// rows that predict completion tokens. The default.
    case sharedPrompt = "shared"
    /// The work of a padded TRL batch without the padding: prompt+chosen and prompt+rejected as two
    /// sequences and the LM head on every position. Same results; for benchmarks against PyTorch.
    case plain
}

/// Which pair and role a head row belongs to (`pair` -1: a row computed but not used, `.plain`).
struct HeadRowOwner {
    var pair: Int32
    var chosen: Bool
    /// 1-based position among the sequence's scored completion tokens (LD-DPO splits on it).
    var position: Int32
}

/// A validated batch of preference pairs packed padding-free for one forward: per pair, either a
/// shared prompt segment with the chosen and rejected completions as child segments (the prompt is
/// computed once), or, when truncation cut the two sequences' prompts differently, two plain
/// segments. The head runs only on rows that predict scored completion tokens.
struct PackedPreferenceBatch {
    let packed: PackedTokens
    let head: HeadQuery
    let owners: [HeadRowOwner]
    let pairs: Int
    /// Per pair: TRL's completion-mask counts and scored-token counts of chosen and rejected.
    let chosenMasked: [Int], rejectedMasked: [Int]
    let chosenScored: [Int], rejectedScored: [Int]
    /// Non-pad tokens of the chosen and rejected rows as TRL counts them (prompt counted twice).
    let numTokens: Int

    init(pairs input: [PreferencePair], vocabSize: Int, maxLength: Int?, truncation: TruncationMode,
         packing: PreferencePacking = .sharedPrompt) throws {
        if input.isEmpty { throw DPOError.invalidArgument("batch: no pairs") }
        try MemoryLimit.checkBatch(tokens: input.reduce(0) { $0 + 2 * $1.promptIds.count + $1.chosenIds.count + $1.rejectedIds.count },
                                   "this batch")
        var tokens: [Int32] = [], positions: [Int32] = [], segments: [PackedTokens.Segment] = []
        var rows: [Int32] = [], labels: [Int32] = [], owners: [HeadRowOwner] = []
        var cm: [Int] = [], rm: [Int] = [], cs: [Int] = [], rs: [Int] = []
        var numTokens = 0
        func checkIds(_ ids: [Int32], _ what: String, _ pair: Int) throws {
            for (j, t) in ids.enumerated() where t < 0 || Int(t) >= vocabSize {
                throw DPOError.invalidArgument("pair \(pair): \(what)[\(j)] = \(t) is outside the vocabulary [0, \(vocabSize))")
            }
        }
        func addSegment(_ ids: ArraySlice<Int32>, firstPosition: Int, parent: Int) -> Int {
            segments.append(.init(start: tokens.count, count: ids.count, parent: parent))
            tokens += ids
            positions += (0..<ids.count).map { Int32(firstPosition + $0) }
            return segments.count - 1
        }
        /// Head rows for a completion whose token k (0-based, in stream order) sits at stream index
        /// `index(k)`; the first is predicted by `firstPredictor` (or unscored when nil).
        func addRows(_ completion: ArraySlice<Int32>, firstPredictor: Int?, start: Int, pair: Int, chosen: Bool) {
            var position: Int32 = 0
            for (k, label) in completion.enumerated() {
                let predictor = k == 0 ? firstPredictor : start + k - 1
                guard let predictor else { continue }
                position += 1
                rows.append(Int32(predictor)); labels.append(label)
                owners.append(HeadRowOwner(pair: Int32(pair), chosen: chosen, position: position))
            }
        }
        for (i, p) in input.enumerated() {
            try checkIds(p.promptIds, "prompt_ids", i)
            try checkIds(p.chosenIds, "chosen_ids", i)
            try checkIds(p.rejectedIds, "rejected_ids", i)
            if p.chosenIds.isEmpty { throw DPOError.invalidArgument("pair \(i): chosen_ids is empty") }
            if p.rejectedIds.isEmpty { throw DPOError.invalidArgument("pair \(i): rejected_ids is empty") }
            if let m = maxLength, truncation == .keepStart, p.promptIds.count >= m {
                throw DPOError.invalidArgument("pair \(i): the prompt alone has \(p.promptIds.count) tokens, max_length is \(m) (with keep_start nothing of the completion would remain)")
            }
            let c = MaskedSequence(prompt: p.promptIds, completion: p.chosenIds, maxLength: maxLength, mode: truncation)
            let r = MaskedSequence(prompt: p.promptIds, completion: p.rejectedIds, maxLength: maxLength, mode: truncation)
            if c.scoredTokens == 0 || r.scoredTokens == 0 {
                throw DPOError.invalidArgument("pair \(i): after truncation the \(c.scoredTokens == 0 ? "chosen" : "rejected") completion has no token with a preceding token to predict it")
            }
            cm.append(c.maskedTokens); rm.append(r.maskedTokens)
            cs.append(c.scoredTokens); rs.append(r.scoredTokens)
            numTokens += c.tokens.count + r.tokens.count
            let shared = packing == .sharedPrompt && c.promptLength == r.promptLength && c.promptLength > 0
                && c.tokens[..<c.promptLength] == r.tokens[..<r.promptLength]
            if shared {
                let P = c.promptLength
                let promptSegment = addSegment(c.tokens[..<P], firstPosition: 0, parent: -1)
                let lastPromptRow = segments[promptSegment].start + P - 1
                for (seq, chosen) in [(c, true), (r, false)] {
                    let s = addSegment(seq.tokens[P...], firstPosition: P, parent: promptSegment)
                    addRows(seq.tokens[P...], firstPredictor: lastPromptRow, start: segments[s].start, pair: i, chosen: chosen)
                }
            } else if packing == .plain {
                for (seq, chosen) in [(c, true), (r, false)] {
                    let start = segments[addSegment(seq.tokens[...], firstPosition: 0, parent: -1)].start
                    var position: Int32 = 0
                    for t in 1..<seq.tokens.count {
                        let scored = t >= seq.promptLength
                        if scored { position += 1 }
                        rows.append(Int32(start + t - 1)); labels.append(seq.tokens[t])
                        owners.append(HeadRowOwner(pair: scored ? Int32(i) : -1, chosen: chosen, position: position))
                    }
                }
            } else {
                for (seq, chosen) in [(c, true), (r, false)] {
                    let s = addSegment(seq.tokens[...], firstPosition: 0, parent: -1)
                    let start = segments[s].start + seq.promptLength
                    addRows(seq.tokens[seq.promptLength...],
                            firstPredictor: seq.promptLength > 0 ? start - 1 : nil, start: start, pair: i, chosen: chosen)
                }
            }
        }
        packed = PackedTokens(tokens: tokens, positions: positions, segments: segments)
        head = HeadQuery(rows: rows, labels: labels)
        self.owners = owners
        pairs = input.count
        chosenMasked = cm; rejectedMasked = rm; chosenScored = cs; rejectedScored = rs
        self.numTokens = numTokens
    }
}
