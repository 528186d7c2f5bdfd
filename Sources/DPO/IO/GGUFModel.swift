/// Loading a `LlamaModel` from a GGUF file (llama.cpp's format), and loading by path whatever a
/// path holds (a model directory or a GGUF file).
extension LlamaModel {
    /// Loads a model from `path`: a Hugging Face model directory (`load(directory:)`), a GGUF
    /// file (`load(ggufFile:)`), or a directory with no config.json holding exactly one `.gguf`.
    public static func load(path: String) throws -> LlamaModel {
        guard isDirectory(path) else {
            guard fileExists(path) else { throw DPOError.io("model path '\(path)' does not exist") }
            return try load(ggufFile: path)
        }
        if fileExists(joinPath(path, "config.json")) { return try load(directory: path) }
        return try load(ggufFile: try ggufFile(inDirectory: path))
    }

    /// The one `.gguf` file of a model directory without config.json, or an error naming what is
    /// there instead.
    public static func ggufFile(inDirectory path: String) throws -> String {
        let ggufs = listDirectory(path).filter { $0.hasSuffix(".gguf") && !$0.hasPrefix(".") }.sorted()
        guard ggufs.count == 1 else {
            throw DPOError.io(ggufs.isEmpty
                ? "no config.json and no .gguf file in '\(path)'"
                : "no config.json in '\(path)' and \(ggufs.count) .gguf files (\(ggufs.joined(separator: ", "))): give the file's path")
        }
        return joinPath(path, ggufs[0])
    }

    /// `ggufFile(inDirectory:)`, or nil when there is not exactly one.
    public static func ggufFileInDirectory(_ path: String) -> String? { try? ggufFile(inDirectory: path) }

    /// Loads a GGUF file of architecture llama or qwen2 (GGUF.swift, GGUFConfig.swift): the config
    /// from its metadata, every tensor dequantized to fp32 under its Hugging Face name, the q/k
    /// rows of a llama file un-permuted, so that the model equals what transformers builds from
    /// the file. Tensors the config does not imply are refused by name. The file's metadata is
    /// kept in `ggufMetadata` for a later `saveGGUF`.
    public static func load(ggufFile path: String) throws -> LlamaModel {
        try loadGGUF(path, keepBaseQuantized: false)
    }

    /// `load(ggufFile:)`, or `load(ggufFile:keepBaseQuantized:)` (QuantizedBase.swift).
    static func loadGGUF(_ path: String, keepBaseQuantized: Bool) throws -> LlamaModel {
        let file = try GGUFFile.open(path: path)
        let config = try LlamaConfig(gguf: file)
        func fail(_ message: String) -> DPOError { .format("\(path): \(message)") }
        // The tensor list the config implies is built only when the file could hold it.
        let expected = ParameterLayout.tensorCount(config)
        guard expected <= file.tensors.count + 1024 else {
            throw fail("the metadata implies \(expected) tensors, the file has \(file.tensors.count)")
        }
        let layout = ParameterLayout(config: config)
        var names: [(spec: TensorSpec, gguf: GGUFTensorInfo)] = []
        for spec in layout.tensors {
            names.append((spec, try file.readableTensor(for: spec).info))
        }
        let used = Set(names.map(\.gguf.name))
        for info in file.tensors where !used.contains(info.name) && !(info.name == "rope_freqs.weight" && config.ropeScaling != .none) {
            throw fail("tensor '\(info.name)' is not part of the \(config.modelType) model the metadata describes")
        }

        let model = try LlamaModel(config: config, omitMatrices: keepBaseQuantized)
        model.ggufMetadata = file.metadata
        let permute = config.modelType == "llama"
        let hd = config.resolvedHeadDim
        // One scratch buffer for the permuted tensors (the largest is q_proj.weight).
        let scratchCount = permute ? config.numAttentionHeads * hd * config.hiddenSize : 0
        let scratch = try FloatBuffer(checkedCount: scratchCount, for: "reading the q/k projections of '\(path)'")
        for (spec, info) in names {
            // Absent from the layout: a linear weight kept quantized (read below).
            guard let destination = model.parameter(spec.name) else { continue }
            let (isQuery, permuted) = GGUFTensorNames.isPermuted(spec.name)
            guard permute && permuted else {
                try file.readFloats(info.name, into: destination)
                continue
            }
            let temp = UnsafeMutableBufferPointer(start: scratch.pointer, count: spec.count)
            try file.readFloats(info.name, into: temp)
            let heads = isQuery ? config.numAttentionHeads : config.numKeyValueHeads
            ggufPermuteRows(scratch.pointer, destination.baseAddress!, heads: heads, headDim: hd,
                            columns: spec.shape.count == 2 ? spec.shape[1] : 1, toGGUF: false)
        }
        if keepBaseQuantized { model.quantizedBase = try QuantizedBase(file: file, config: config) }
        return model
    }
}

extension GGUFFile {
    /// The file's tensor for the Hugging Face parameter `spec`: present under its GGUF name, of the
    /// shape the metadata implies and of a type swift-dpo dequantizes; otherwise an error naming it.
    func readableTensor(for spec: TensorSpec) throws -> (name: String, info: GGUFTensorInfo) {
        func fail(_ message: String) -> DPOError { .format("\(path): \(message)") }
        guard let ggufName = GGUFTensorNames.gguf(spec.name) else {
            throw DPOError.internal("no GGUF name for parameter '\(spec.name)'")
        }
        guard let info = tensor(named: ggufName) else {
            throw fail("tensor '\(ggufName)' (\(spec.name)) is missing")
        }
        guard info.shape == spec.shape else {
            throw fail("tensor '\(ggufName)' has shape \(info.shape), the metadata implies \(spec.shape)")
        }
        guard info.type.isReadableAsFloat else {
            throw fail("tensor '\(ggufName)' has ggml type \(info.type.name), which swift-dpo cannot dequantize (supported: \(GGMLType.readableNames))")
        }
        return (ggufName, info)
    }
}
