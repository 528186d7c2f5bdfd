/// A padding-free token stream holding several sequences, the input of the model's forward.
///
/// The stream is cut into contiguous segments. A token attends causally to earlier tokens of its
/// own segment and to every token of the segment's `parent` (if any). A plain sequence is one
/// segment; a DPO pair can share its prompt: prompt segment P, then chosen C and rejected R with
/// parent P, so the prompt is computed once. `positions` are the RoPE positions of the tokens
/// (a child segment's positions continue after its parent's).
public struct PackedTokens: Sendable {
    public struct Segment: Equatable, Sendable {
        public var start: Int
        public var count: Int
        /// Index of an earlier segment that every token here sees in full, or -1.
        public var parent: Int
        public init(start: Int, count: Int, parent: Int = -1) {
            self.start = start; self.count = count; self.parent = parent
        }
    }

    public var tokens: [Int32]
    public var positions: [Int32]
    public var segments: [Segment]

    public init(tokens: [Int32], positions: [Int32], segments: [Segment]) {
        self.tokens = tokens; self.positions = positions; self.segments = segments
    }

    /// Packs independent sequences, one segment each, positions 0..<n.
    public init(sequences: [[Int32]]) {
        tokens = []; positions = []; segments = []
        for s in sequences {
            segments.append(Segment(start: tokens.count, count: s.count))
            tokens += s
            positions += (0..<s.count).map { Int32($0) }
        }
    }

    public var count: Int { tokens.count }

    /// Checks the structure and token ids; errors name the bad index and value.
    public func validate(vocabSize: Int) throws {
        if tokens.isEmpty { throw DPOError.invalidArgument("packed tokens: the batch is empty") }
        if positions.count != tokens.count {
            throw DPOError.invalidArgument("packed tokens: \(positions.count) positions for \(tokens.count) tokens")
        }
        for (i, t) in tokens.enumerated() where t < 0 || Int(t) >= vocabSize {
            throw DPOError.invalidArgument("token id \(t) at index \(i) is outside the vocabulary [0, \(vocabSize))")
        }
        for (i, p) in positions.enumerated() where p < 0 {
            throw DPOError.invalidArgument("position \(p) at index \(i) is negative")
        }
        var next = 0
        for (i, s) in segments.enumerated() {
            if s.start != next || s.count <= 0 {
                throw DPOError.invalidArgument("segment \(i) (start \(s.start), count \(s.count)) does not continue the stream at \(next) with at least one token")
            }
            if s.parent >= i || s.parent < -1 {
                throw DPOError.invalidArgument("segment \(i) has parent \(s.parent); a parent must be an earlier segment or -1")
            }
            if s.parent >= 0 && segments[s.parent].parent != -1 {
                throw DPOError.invalidArgument("segment \(i): its parent \(s.parent) has a parent itself (one level only)")
            }
            next += s.count
        }
        if next != tokens.count {
            throw DPOError.invalidArgument("segments cover \(next) of \(tokens.count) tokens")
        }
    }
}

/// Which hidden states go through the LM head: row `rows[i]` of the stream predicts `labels[i]`.
/// A row may appear more than once (a shared prompt's last token predicts the first token of both
/// the chosen and the rejected completion).
public struct HeadQuery: Sendable {
    public var rows: [Int32]
    public var labels: [Int32]
    public init(rows: [Int32], labels: [Int32]) { self.rows = rows; self.labels = labels }

    public var count: Int { rows.count }

    func validate(tokens: Int, vocabSize: Int) throws {
        if rows.count != labels.count {
            throw DPOError.invalidArgument("head query: \(rows.count) rows but \(labels.count) labels")
        }
        for (i, r) in rows.enumerated() where r < 0 || Int(r) >= tokens {
            throw DPOError.invalidArgument("head query: row \(r) at index \(i) is outside the stream of \(tokens) tokens")
        }
        for (i, l) in labels.enumerated() where l < 0 || Int(l) >= vocabSize {
            throw DPOError.invalidArgument("label \(l) at index \(i) is outside the vocabulary [0, \(vocabSize))")
        }
    }
}

/// Per-row outputs of the LM head (one entry per `HeadQuery` row).
public struct HeadOutputs: Sendable {
    /// log softmax(z)[label]
    public var logps: [Float]
    /// H(softmax z) = lse(z) - sum_v p_v z_v
    public var entropy: [Float]
    /// mean_v z_v
    public var meanLogit: [Float]
    /// 1 when argmax_v z_v == label (first maximum, as torch.argmax), else 0
    public var argmaxHit: [Float]
    /// log sum_v p_v^2 = lse(2z) - 2 lse(z)  (WPO weights)
    public var logSumP2: [Float]
}
