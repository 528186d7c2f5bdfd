/// Loading and saving a `LlamaModel` as a Hugging Face model directory: `config.json` plus
/// `model.safetensors` (or a sharded set with `model.safetensors.index.json`).
extension LlamaModel {
    /// Loads `config.json` and the weights (F32, BF16 or F16, kept as F32) from `directory`.
    /// Every tensor the config implies must be present with the right shape; tensors the config
    /// does not imply are refused (they would otherwise be silently ignored), except rotary
    /// `inv_freq` buffers of old checkpoints and a redundant `lm_head.weight` in a tied model.
    ///
    /// The directory's parent is locked (shared) while it is read, and an interrupted save is
    /// first completed or removed (StagedSave.swift).
    public static func load(directory: String) throws -> LlamaModel {
        let lock = try lockModelDirectoryForLoading(directory)
        defer { lock?.release() }
        guard isDirectory(directory) else {
            throw DPOError.io("model directory '\(directory)' does not exist or is not a directory")
        }
        let configPath = joinPath(directory, "config.json")
        guard fileExists(configPath) else { throw DPOError.io("no config.json in '\(directory)'") }
        let json: JSONValue
        do { json = try JSON.parse(try readFile(configPath)) } catch DPOError.format(let m) {
            throw DPOError.format("\(configPath): \(m)")
        }
        let config: LlamaConfig
        do { config = try LlamaConfig(json: json) } catch DPOError.format(let m) {
            throw DPOError.format("\(configPath): \(m)")
        }
        // Check the weights file against the config before allocating anything the config sizes:
        // a small folder whose config.json describes a large model is refused, not allocated.
        try config.validate()
        let checkpoint = try SafetensorsCheckpoint.open(directory: directory)
        // The tensor list the config implies is built only when the file could hold it (give or
        // take a few tensors, which the loop below then names).
        let expected = ParameterLayout.tensorCount(config)
        guard expected <= checkpoint.tensorNames.count + 1024 else {
            throw DPOError.format("the config in '\(directory)' implies \(expected) tensors, its checkpoint has \(checkpoint.tensorNames.count)")
        }
        let layout = ParameterLayout(config: config)
        for spec in layout.tensors {
            guard let info = checkpoint.info(spec.name) else {
                throw DPOError.format("tensor '\(spec.name)' is missing from the checkpoint in '\(directory)'")
            }
            guard info.shape == spec.shape else {
                throw DPOError.format("tensor '\(spec.name)' in '\(directory)' has shape \(info.shape), the config implies \(spec.shape)")
            }
        }
        for name in checkpoint.tensorNames where layout.tensor(named: name) == nil {
            if name.hasSuffix("rotary_emb.inv_freq") || (config.tieWordEmbeddings && name == "lm_head.weight") {
                continue
            }
            throw DPOError.format("tensor '\(name)' in '\(directory)' is not part of the model the config describes")
        }
        let model = try LlamaModel(config: config)
        model.extraConfig = json.object ?? JSONObject()
        for spec in model.layout.tensors {
            try checkpoint.readFloats(spec.name, into: model.parameter(spec.name)!)
        }
        return model
    }

    /// Writes `config.json` and `model.safetensors` (F32) into `directory`, and for a model loaded
    /// from a GGUF file whose metadata carries a tokenizer the engine reads, that tokenizer as
    /// `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`
    /// (TokenizerExport.swift). All-or-nothing even if the process is killed: a new directory
    /// appears whole by one rename; in an existing one (which may hold other files, left as they
    /// are) the written files are replaced together or not at all (StagedSave.swift). Saves into
    /// one parent directory are serialised by a lock on it, so two saves to one path never mix
    /// their files. A tied model stores no `lm_head.weight`, as transformers does. A model without
    /// a GGUF tokenizer (or with one the engine cannot read) writes no tokenizer files.
    ///
    /// A model with a LoRA adapter writes the adapter files only (`adapter_config.json` and
    /// `adapter_model.safetensors`, as transformers' and PEFT's `save_pretrained` do); call
    /// `mergeAndUnload()` first to save the merged model.
    ///
    /// `tokenizer`, when given, is written instead of the GGUF's (as TRL's `save_model` writes the
    /// trainer's processing class): the tokenizer a run used goes with its model.
    public func save(directory: String, tokenizer given: Tokenizer? = nil) throws {
        if let adapter { return try adapter.save(directory: directory) }
        try checkFullWeights("saving the model")
        let tokenizer = given ?? ggufMetadata.flatMap { try? Tokenizer(ggufMetadata: $0) }
        try saveDirectoryAllOrNothing(directory, what: "a model") { staging in
            try writeFiles(into: staging)
            try tokenizer?.writeHuggingFaceFiles(into: staging)
        }
    }

    /// Writes `model.safetensors` and `config.json` into the existing directory `directory`.
    private func writeFiles(into directory: String) throws {
        let base = parameters.pointer
        let tensors = layout.tensors.map { spec in
            (name: spec.name, shape: spec.shape,
             data: UnsafeBufferPointer(start: base + spec.offset, count: spec.count))
        }
        try SafetensorsWriter.write(joinPath(directory, "model.safetensors"), tensors: tensors,
                                    metadata: ["format": "pt"])
        let text = JSON.serialize(config.json(base: extraConfig)) + "\n"
        try writeFileAtomically(joinPath(directory, "config.json"), bytes: Array(text.utf8))
    }
}
