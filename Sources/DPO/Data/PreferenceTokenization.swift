// DPOTrainer._prepare_dataset of TRL 1.16, one row at a time: extract_prompt for rows without a
// prompt, EOS appended to text completions, then tokenize_fn.

extension DatasetTokenizer {
    /// The row tokenized as DPOTrainer prepares it. `format` is the dataset's (decided from its
    /// first row by `DatasetFormat.preference(of:)`); a row that does not fit it is an error
    /// naming the row and the field. The row is not truncated: see `TokenizedPreference`.
    public func preference(_ row: DatasetRow, format: DatasetFormat) throws -> TokenizedPreference {
        switch format {
        case .tokenizedPreference:
            let v = vocabSize
            return TokenizedPreference(promptIds: try row.tokenIDs("prompt_ids", vocabSize: v),
                                       chosenIds: try row.tokenIDs("chosen_ids", vocabSize: v),
                                       rejectedIds: try row.tokenIDs("rejected_ids", vocabSize: v))
        case .standardPreference, .standardImplicitPromptPreference:
            var (prompt, chosen, rejected) = try textParts(row, implicit: format == .standardImplicitPromptPreference)
            let eos = try eosText(row)
            chosen = Self.appending(eos, to: chosen)
            rejected = Self.appending(eos, to: rejected)
            return split(prompt: try encodeText(prompt, row: row), promptChosen: try encodeText(prompt + chosen, row: row),
                         promptRejected: try encodeText(prompt + rejected, row: row))
        case .conversationalPreference, .conversationalImplicitPromptPreference:
            let (prompt, chosen, rejected) = try conversationParts(row, implicit: format == .conversationalImplicitPromptPreference)
            return split(prompt: try encodeConversation(prompt, addGenerationPrompt: true, row: row),
                         promptChosen: try encodeConversation(prompt + chosen, addGenerationPrompt: false, row: row),
                         promptRejected: try encodeConversation(prompt + rejected, addGenerationPrompt: false, row: row))
        default:
            throw DPOError.invalidArgument("\(row.location): \(format.rawValue) is not a preference format")
        }
    }

    private func textParts(_ row: DatasetRow, implicit: Bool) throws -> (String, String, String) {
        let chosen = try row.string("chosen"), rejected = try row.string("rejected")
        if !implicit { return (try row.string("prompt"), chosen, rejected) }
        guard let s = ExtractPrompt.strings(chosen, rejected) else {
            throw row.error(chosen.isEmpty ? "chosen" : "rejected", "is empty: no prompt can be extracted")
        }
        return s
    }

    private func conversationParts(_ row: DatasetRow, implicit: Bool) throws -> ([JSONValue], [JSONValue], [JSONValue]) {
        let chosen = try row.messages("chosen"), rejected = try row.messages("rejected")
        if !implicit { return (try row.messages("prompt"), chosen, rejected) }
        guard let s = ExtractPrompt.conversations(chosen, rejected) else {
            throw row.error(chosen.isEmpty ? "chosen" : "rejected", "is empty: no prompt can be extracted")
        }
        return s
    }

    /// The completions start where the prompt's ids and each prompt + completion's ids diverge
    /// (the earlier of the two), as TRL splits them.
    private func split(prompt: [Int32], promptChosen: [Int32], promptRejected: [Int32]) -> TokenizedPreference {
        let n = min(Self.commonPrefixLength(prompt, promptChosen), Self.commonPrefixLength(prompt, promptRejected))
        return TokenizedPreference(promptIds: Array(prompt[..<n]), chosenIds: Array(promptChosen[n...]),
                                   rejectedIds: Array(promptRejected[n...]))
    }
}
