/// The dataset types of TRL's docs ("Dataset formats and types"), decided as TRL's trainers decide
/// them: from the first row, and then the same for every row (a `datasets.Dataset` column has one
/// type, so a later row of another shape is a mistyped field).
public enum DatasetFormat: String, CaseIterable, Sendable {
    // Preference (DPO)
    /// `prompt`, `chosen`, `rejected` strings.
    case standardPreference = "standard preference"
    /// `prompt`, `chosen`, `rejected` lists of messages.
    case conversationalPreference = "conversational preference"
    /// Only `chosen` and `rejected` strings: the shared start is the prompt (TRL's `extract_prompt`).
    case standardImplicitPromptPreference = "standard implicit prompt preference"
    /// Only `chosen` and `rejected` conversations: the shared leading messages are the prompt.
    case conversationalImplicitPromptPreference = "conversational implicit prompt preference"
    /// `prompt_ids`, `chosen_ids`, `rejected_ids`: tokenized already (TRL's prepared columns).
    case tokenizedPreference = "tokenized preference"
    // SFT
    /// The text column (`dataset_text_field`, "text").
    case standardLanguageModeling = "standard language modeling"
    /// `messages`: a conversation.
    case conversationalLanguageModeling = "conversational language modeling"
    /// `prompt` and `completion` strings.
    case standardPromptCompletion = "standard prompt-completion"
    /// `prompt` and `completion` lists of messages.
    case conversationalPromptCompletion = "conversational prompt-completion"
    /// Tokenized already: `input_ids` (with `completion_mask` and `assistant_masks` if any), TRL's
    /// processed columns. As in TRL, the completion mask is used only with `completion_only_loss`.
    case tokenizedLanguageModeling = "tokenized language modeling"
    /// Tokenized already as `prompt_ids` and `completion_ids` (this project's batch items): like
    /// prompt-completion rows, only the completion is learned unless `completion_only_loss` is false.
    case tokenizedPromptCompletion = "tokenized prompt-completion"

    public var isConversational: Bool {
        switch self {
        case .conversationalPreference, .conversationalImplicitPromptPreference,
             .conversationalLanguageModeling, .conversationalPromptCompletion: return true
        default: return false
        }
    }

    public var isPreference: Bool {
        switch self {
        case .standardPreference, .conversationalPreference, .standardImplicitPromptPreference,
             .conversationalImplicitPromptPreference, .tokenizedPreference: return true
        default: return false
        }
    }

    /// The preference format of a (first) row, as DPOTrainer decides: `extract_prompt` when the row
    /// has no "prompt", conversational when the completions are lists of messages.
    public static func preference(of row: DatasetRow) throws -> DatasetFormat {
        if !row.has("chosen") && !row.has("rejected") && !row.has("prompt")
            && (row.has("prompt_ids") || row.has("chosen_ids") || row.has("rejected_ids")) {
            return .tokenizedPreference
        }
        let chosen = try row.required("chosen")
        let conversational = chosen.isConversation
        if row.has("prompt") {
            return conversational ? .conversationalPreference : .standardPreference
        }
        return conversational ? .conversationalImplicitPromptPreference : .standardImplicitPromptPreference
    }

    /// The SFT format of a (first) row, as SFTTrainer decides: prompt-completion when the row has a
    /// "prompt", otherwise language modeling on `messages` (a conversation) or `textField`.
    public static func sft(of row: DatasetRow, textField: String) throws -> DatasetFormat {
        if row.has("input_ids") { return .tokenizedLanguageModeling }
        if row.has("prompt_ids") && row.has("completion_ids") { return .tokenizedPromptCompletion }
        if row.has("prompt") {
            return try row.required("prompt").isConversation ? .conversationalPromptCompletion : .standardPromptCompletion
        }
        if row.has("messages"), try row.required("messages").isConversation { return .conversationalLanguageModeling }
        if row.has(textField) { return .standardLanguageModeling }
        if row.has("messages") { throw row.error("messages", "must be a list of messages with 'role' and 'content'") }
        throw DPOError.invalidArgument("\(row.location): no SFT columns: expected '\(textField)', 'messages', or 'prompt' and 'completion'")
    }
}
