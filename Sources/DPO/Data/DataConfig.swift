/// How rows of text become token ids: the dataset settings of TRL's `DPOConfig` and `SFTConfig`
/// (TRL 1.16 names, Swift-cased, TRL's defaults). TRL 1.16 has no `max_prompt_length` or
/// `max_completion_length`: one `max_length` bounds prompt + completion.
public struct DataConfig: Equatable, Sendable {
    /// `max_length`: longest prompt + completion sequence (nil = no limit). DPO truncates in its
    /// collator and drops, under `keep_start`, rows whose prompt alone fills it; SFT truncates while
    /// preparing and drops rows left with no token to learn.
    public var maxLength: Int? = 1024
    /// `truncation_mode`: which end of a too-long sequence is kept.
    public var truncationMode: TruncationMode = .keepStart
    /// SFT `completion_only_loss`: learn only the completion of prompt-completion rows. nil (TRL's
    /// default): on for prompt-completion datasets, off for language modeling ones.
    public var completionOnlyLoss: Bool? = nil
    /// SFT `assistant_only_loss`: learn only what the chat template renders inside
    /// `{% generation %}` blocks (conversational rows only).
    public var assistantOnlyLoss = false
    /// SFT `dataset_text_field`: the column of language modeling rows.
    public var datasetTextField = "text"
    /// A chat template (Jinja source) used instead of the tokenizer's, as SFT's
    /// `chat_template_path` does; e.g. one with `{% generation %}` blocks for `assistantOnlyLoss`.
    public var chatTemplate: String? = nil
    /// SFT's `chat_template_path`: a Jinja template file (or a directory holding
    /// `chat_template.jinja`) used instead of the tokenizer's template; read when the datasets are
    /// prepared. `chatTemplate`, if set, wins.
    public var chatTemplatePath: String? = nil

    public init() {}

    public func validate() throws {
        if let m = maxLength, m < 1 { throw DPOError.invalidArgument("max_length must be >= 1 or unset, got \(m)") }
        if datasetTextField.isEmpty { throw DPOError.invalidArgument("dataset_text_field must not be empty") }
    }
}
