// SFTTrainer._prepare_dataset of TRL 1.16, one row at a time: EOS appended to text, tokenize_fn
// (completion mask from the prompt/prompt+completion split, assistant mask from the template's
// generation blocks), the labels built from the masks, and truncation to max_length.

extension DatasetTokenizer {
    /// TRL's `completion_only_loss` for a dataset of `format`: the configured value, or by default
    /// on exactly for prompt-completion datasets.
    public func completionOnlyLoss(for format: DatasetFormat) -> Bool {
        config.completionOnlyLoss ?? (format == .standardPromptCompletion || format == .conversationalPromptCompletion
                                      || format == .tokenizedPromptCompletion)
    }

    /// The row tokenized, labelled and truncated as SFTTrainer prepares it. `format` is the
    /// dataset's (`DatasetFormat.sft(of:textField:)` of its first row). Whether TRL would then drop
    /// it is `hasLearnedTokens` of the result (`SFTDatasetPreparer` drops and counts).
    public func sft(_ row: DatasetRow, format: DatasetFormat) throws -> TokenizedSFT {
        if config.assistantOnlyLoss && format != .tokenizedLanguageModeling && format != .tokenizedPromptCompletion {
            guard format.isConversational else {
                throw DPOError.invalidArgument("\(row.location): assistant_only_loss needs a conversational dataset (this one is \(format.rawValue))")
            }
            guard templateHasGenerationBlocks else {
                throw DPOError.invalidArgument("assistant_only_loss needs a chat template with {% generation %} blocks around the assistant's turns; the template in use has none (set DataConfig.chatTemplate)")
            }
        }
        var ids: [Int32]
        var completionMask: [UInt8]? = nil
        var assistantMask: [UInt8]? = nil
        switch format {
        case .standardLanguageModeling:
            ids = try encodeText(Self.appending(try eosText(row), to: try row.string(config.datasetTextField)), row: row)
        case .conversationalLanguageModeling:
            (ids, assistantMask) = try encodeMasked(try row.messages("messages"), row: row)
        case .standardPromptCompletion:
            let prompt = try row.string("prompt")
            var completion = try row.string("completion")
            // TRL's add_eos puts the EOS on the text column when the row has one, and then the
            // completion keeps none.
            if !row.has(config.datasetTextField) { completion = Self.appending(try eosText(row), to: completion) }
            let promptIDs = try encodeText(prompt, row: row)
            ids = try encodeText(prompt + completion, row: row)
            completionMask = Self.completionMask(prompt: promptIDs, full: ids)
        case .conversationalPromptCompletion:
            let prompt = try row.messages("prompt"), completion = try row.messages("completion")
            let promptIDs = try encodeConversation(prompt, addGenerationPrompt: true, row: row)
            (ids, assistantMask) = try encodeMasked(prompt + completion, row: row)
            completionMask = Self.completionMask(prompt: promptIDs, full: ids)
        case .tokenizedLanguageModeling, .tokenizedPromptCompletion:
            (ids, completionMask, assistantMask) = try tokenized(row)
        default:
            throw DPOError.invalidArgument("\(row.location): \(format.rawValue) is not an SFT format")
        }
        if let a = assistantMask, !a.contains(1) {
            throw DPOError.invalidArgument("\(row.location): assistant_only_loss: the chat template marks no token of this row as the assistant's (no {% generation %} output)")
        }
        let useCompletion = completionOnlyLoss(for: format)
        var labels = ids
        for t in ids.indices {
            let learned = (!useCompletion || (completionMask?[t] ?? 1) == 1) && (assistantMask?[t] ?? 1) == 1
            if !learned { labels[t] = TokenizedSFT.ignoredLabel }
        }
        var out = TokenizedSFT(inputIds: ids, labels: labels, completionMask: completionMask, assistantMask: assistantMask)
        if let m = config.maxLength, ids.count > m {
            func cut<T>(_ a: [T]) -> [T] { config.truncationMode == .keepStart ? Array(a.prefix(m)) : Array(a.suffix(m)) }
            out = TokenizedSFT(inputIds: cut(ids), labels: cut(labels), completionMask: completionMask.map(cut),
                               assistantMask: assistantMask.map(cut), truncated: true)
        }
        return out
    }

    /// A tokenized row's ids and masks: `input_ids` with its `completion_mask` (if any) and, with
    /// `assistantOnlyLoss`, its `assistant_masks`; or `prompt_ids` + `completion_ids`.
    private func tokenized(_ row: DatasetRow) throws -> ([Int32], [UInt8]?, [UInt8]?) {
        if !row.has("input_ids") {
            let prompt = try row.tokenIDs("prompt_ids", vocabSize: vocabSize)
            let completion = try row.tokenIDs("completion_ids", vocabSize: vocabSize)
            if completion.isEmpty { throw row.error("completion_ids", "is empty") }
            let mask = [UInt8](repeating: 0, count: prompt.count) + [UInt8](repeating: 1, count: completion.count)
            return (prompt + completion, mask, nil)
        }
        let ids = try row.tokenIDs("input_ids", vocabSize: vocabSize)
        if ids.isEmpty { throw row.error("input_ids", "is empty") }
        let completion = row.has("completion_mask") ? try row.mask("completion_mask", count: ids.count) : nil
        var assistant: [UInt8]? = nil
        if config.assistantOnlyLoss {
            guard row.has("assistant_masks") else {
                throw row.error("assistant_masks", "is missing: assistant_only_loss on a tokenized dataset needs it")
            }
            assistant = try row.mask("assistant_masks", count: ids.count)
        }
        return (ids, completion, assistant)
    }

    /// `[0] * prompt_len + [1] * (len(full) - prompt_len)` with TRL's `common_prefix_length`.
    static func completionMask(prompt: [Int32], full: [Int32]) -> [UInt8] {
        let n = commonPrefixLength(prompt, full)
        return [UInt8](repeating: 0, count: n) + [UInt8](repeating: 1, count: full.count - n)
    }

    /// The conversation's ids and, with `assistantOnlyLoss`, its assistant mask: transformers'
    /// `apply_chat_template(..., return_assistant_tokens_mask=True)` marks every token that
    /// overlaps a generation block's output (tokenization_utils_base.py, `assistant_masks`).
    private func encodeMasked(_ messages: [JSONValue], row: DatasetRow) throws -> ([Int32], [UInt8]?) {
        let rendered = try render(messages, addGenerationPrompt: false, row: row)
        let tokenizer = try textTokenizer(row)
        guard config.assistantOnlyLoss else { return (tokenizer.encode(rendered.text, addSpecialTokens: false), nil) }
        let (ids, offsets) = try tokenizer.encodeWithOffsets(rendered.text)
        let spans = rendered.generationSpans
        var mask = [UInt8](repeating: 0, count: ids.count)
        var s = 0
        for (k, token) in offsets.enumerated() {
            while s < spans.count && token.lowerBound >= spans[s].upperBound { s += 1 }
            if s == spans.count { break }
            if token.upperBound > spans[s].lowerBound { mask[k] = 1 }
        }
        return (ids, mask)
    }
}
