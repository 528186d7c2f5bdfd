/// A preference row as TRL's prepared DPO dataset holds it: `prompt_ids`, `chosen_ids`,
/// `rejected_ids`, untruncated (DPO truncates in its collator, as the engine's DPOTrainer does).
public struct TokenizedPreference: Equatable, Sendable {
    public var promptIds: [Int32]
    public var chosenIds: [Int32]
    public var rejectedIds: [Int32]

    public init(promptIds: [Int32], chosenIds: [Int32], rejectedIds: [Int32]) {
        self.promptIds = promptIds; self.chosenIds = chosenIds; self.rejectedIds = rejectedIds
    }

    /// The pair for `DPOTrainer.step` (which truncates to its `max_length` as TRL's collator does).
    public var pair: PreferencePair {
        PreferencePair(promptIds: promptIds, chosenIds: chosenIds, rejectedIds: rejectedIds)
    }

    /// Whether TRL's collator shortens prompt + chosen or prompt + rejected to `maxLength`.
    public func isTruncated(maxLength: Int?) -> Bool {
        guard let m = maxLength else { return false }
        return promptIds.count + max(chosenIds.count, rejectedIds.count) > m
    }

    /// Whether TRL's DPOTrainer drops the row: under `keep_start` a prompt that fills `max_length`
    /// would leave nothing of the completions.
    public func isDropped(maxLength: Int?, truncationMode: TruncationMode) -> Bool {
        guard let m = maxLength, truncationMode == .keepStart else { return false }
        return promptIds.count >= m
    }
}

/// An SFT row as TRL's prepared SFT dataset holds it: `input_ids` and `labels` (the token, or
/// -100 where it is not learned), truncated to `max_length`; and the masks the labels came from.
public struct TokenizedSFT: Equatable, Sendable {
    /// The label of a token that is not learned (PyTorch's `ignore_index`).
    public static let ignoredLabel: Int32 = -100

    public var inputIds: [Int32]
    public var labels: [Int32]
    /// 1 on completion tokens of prompt-completion rows (nil for language modeling rows).
    public var completionMask: [UInt8]?
    /// 1 on tokens rendered inside `{% generation %}` blocks, with `assistantOnlyLoss` (else nil).
    public var assistantMask: [UInt8]?
    /// Whether `max_length` cut the row.
    public var truncated: Bool

    public init(inputIds: [Int32], labels: [Int32], completionMask: [UInt8]? = nil,
                assistantMask: [UInt8]? = nil, truncated: Bool = false) {
        self.inputIds = inputIds; self.labels = labels
        self.completionMask = completionMask; self.assistantMask = assistantMask
        self.truncated = truncated
    }

    /// Whether any token is learned (TRL drops the rows where none is).
    public var hasLearnedTokens: Bool { labels.contains { $0 != Self.ignoredLabel } }

    /// The example for `SFTTrainer.step`: the tokens before the first learned one are the prompt,
    /// the rest up to the last learned token is the completion, with a mask when unlearned tokens
    /// lie between learned ones (several assistant turns under `assistantOnlyLoss`). Unlearned
    /// tokens after the last learned one are left out (no learned token's loss depends on them;
    /// `num_tokens` counts without them).
    public func example(location: RowLocation? = nil) throws -> SFTExample {
        let at = location.map { "\($0): " } ?? ""
        guard labels.count == inputIds.count else {
            throw DPOError.invalidArgument("\(at)\(labels.count) labels for \(inputIds.count) input ids")
        }
        guard let first = labels.firstIndex(where: { $0 != Self.ignoredLabel }),
              let last = labels.lastIndex(where: { $0 != Self.ignoredLabel }) else {
            throw DPOError.invalidArgument("\(at)no token is learned")
        }
        let learned = labels[first...last].map { $0 != Self.ignoredLabel }
        return SFTExample(promptIds: Array(inputIds[..<first]), completionIds: Array(inputIds[first...last]),
                          completionMask: learned.allSatisfy { $0 } ? nil : learned)
    }
}
