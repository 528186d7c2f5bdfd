/// LoRA adapters as PEFT saves them (`PeftModel.save_pretrained`): a directory with
/// `adapter_config.json` (LoraConfig.jsonObject) and `adapter_model.safetensors` holding every
/// `base_model.model.model.layers.<l>.<module path>.lora_A.weight` [r, in] and `lora_B.weight`
/// [out, r] (F32 on save; F32, F16 or BF16 on load). `PeftModel.from_pretrained(base, dir)` loads
/// what `save` writes, and `load` reads what PEFT (or TRL with a `peft_config`) writes.
public enum LoraFiles {
    public static let configName = "adapter_config.json"
    public static let weightsName = "adapter_model.safetensors"
}

extension LoraAdapter {
    /// Writes the adapter directory, all-or-nothing as a model save is (StagedSave.swift); other
    /// files in an existing directory are left as they are.
    public func save(directory: String) throws {
        try saveDirectoryAllOrNothing(directory, what: "a LoRA adapter") { try writeFiles(into: $0) }
    }

    private func writeFiles(into directory: String) throws {
        let base = UnsafePointer(parameters.pointer)
        let list = tensors.map { (name: $0.name, shape: $0.shape, data: UnsafeBufferPointer(start: base + $0.offset, count: $0.count)) }
        try SafetensorsWriter.write(joinPath(directory, LoraFiles.weightsName), tensors: list, metadata: ["format": "pt"])
        let text = JSON.serialize(.object(config.jsonObject)) + "\n"
        try writeFileAtomically(joinPath(directory, LoraFiles.configName), bytes: Array(text.utf8))
    }

    /// Reads a PEFT adapter directory for a model of shape `model`. Every tensor the config implies
    /// must be present with its shape (checked in the header before anything is allocated), no
    /// other tensor may be, and every value must be finite.
    public static func load(directory: String, model: LlamaConfig) throws -> LoraAdapter {
        let lock = try lockModelDirectoryForLoading(directory)
        defer { lock?.release() }
        guard isDirectory(directory) else {
            throw DPOError.io("LoRA adapter directory '\(directory)' does not exist or is not a directory")
        }
        let configPath = joinPath(directory, LoraFiles.configName)
        guard fileExists(configPath) else { throw DPOError.io("no \(LoraFiles.configName) in '\(directory)'") }
        let json: JSONValue
        do { json = try JSON.parse(try readFile(configPath)) } catch DPOError.format(let m) {
            throw DPOError.format("\(configPath): \(m)")
        }
        guard let object = json.object else { throw DPOError.format("\(configPath): not a JSON object") }
        let config = try LoraConfig(json: object, source: configPath)
        let weightsPath = joinPath(directory, LoraFiles.weightsName)
        guard fileExists(weightsPath) else {
            throw DPOError.io("no \(LoraFiles.weightsName) in '\(directory)'" + (fileExists(joinPath(directory, "adapter_model.bin")) ? " (adapter_model.bin, a pickle, is not read: save with safe_serialization=True)" : ""))
        }
        let file = try SafetensorsFile.open(weightsPath)
        // The tensor list (2 tensors per module and layer) is built only if the file could hold
        // it, give or take a few tensors, which the loop below then names.
        let expected = 2 * config.modules.count * model.numHiddenLayers
        guard expected <= file.tensorNames.count + 1024 else {
            throw DPOError.format("\(weightsPath): the config implies \(expected) tensors for \(model.numHiddenLayers) layers, the file has \(file.tensorNames.count)")
        }
        let plan = try plan(config, model: model)
        for spec in plan.tensors {
            guard let info = file.info(spec.name) else {
                throw DPOError.format("\(weightsPath): tensor '\(spec.name)' is missing")
            }
            guard info.shape == spec.shape else {
                throw DPOError.format("\(weightsPath): tensor '\(spec.name)' has shape \(info.shape), expected \(spec.shape) (r \(config.r))")
            }
        }
        let known = Set(plan.tensors.map(\.name))
        if let extra = file.tensorNames.first(where: { !known.contains($0) }) {
            throw DPOError.format("\(weightsPath): tensor '\(extra)' is not part of the adapter its config describes (target_modules \(config.modules.map(\.name)))")
        }
        let adapter = try LoraAdapter(config: config, tensors: plan.tensors, slots: plan.slots, maxInFeatures: plan.maxIn)
        for spec in plan.tensors {
            let view = UnsafeMutableBufferPointer(start: adapter.parameters.pointer + spec.offset, count: spec.count)
            try file.readFloats(spec.name, into: view)
            if let i = view.firstIndex(where: { !$0.isFinite }) {
                throw DPOError.format("\(weightsPath): tensor '\(spec.name)' has a NaN or infinite value at index \(i)")
            }
        }
        return adapter
    }
}

extension LlamaModel {
    /// transformers' / PEFT's `load_adapter(path)`: reads a PEFT adapter directory and attaches it
    /// (see `attachAdapter`). Training it with a DPO trainer and no reference model uses a frozen
    /// copy of these weights as the reference (TRL's "ref" adapter).
    @discardableResult
    public func loadAdapter(directory: String) throws -> LoraAdapter {
        if adapter != nil { throw DPOError.wrongState("load_adapter: the model already has a LoRA adapter") }
        let a = try LoraAdapter.load(directory: directory, model: config)
        try attachAdapter(a)
        return a
    }

    /// PEFT's `save_pretrained` of a model with an adapter: the adapter files only.
    public func saveAdapter(directory: String) throws {
        guard let adapter else { throw DPOError.wrongState("save_adapter: the model has no LoRA adapter") }
        try adapter.save(directory: directory)
    }
}
