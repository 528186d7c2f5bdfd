// Checks of single examples against a trainer's model and config, without running anything: a
// program that holds a whole dataset (the command line reads its JSONL files whole) checks every
// row before the first step, instead of failing mid-run when a batch reaches a bad row.

extension DPOTrainer {
    /// Throws what a step on a batch holding `pair` would throw for it: token ids outside the
    /// vocabulary, an empty completion, a prompt that leaves nothing of a completion after
    /// `max_length` truncation. The message starts with "pair 0: ".
    public func check(_ pair: PreferencePair) throws {
        _ = try pack([pair])
    }
}

extension SFTTrainer {
    /// Throws what a step on a batch holding `example` would throw for it (see
    /// `DPOTrainer.check`). The message starts with "example 0: ".
    public func check(_ example: SFTExample) throws {
        _ = try pack([example])
    }
}
