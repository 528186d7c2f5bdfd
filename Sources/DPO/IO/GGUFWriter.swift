// Writing a `LlamaModel` as a GGUF v3 file the way llama.cpp's convert_hf_to_gguf.py does:
// llama.cpp tensor names, q/k rows permuted (llama architecture), 2-D weights in the chosen type
// and 1-D tensors (norms, biases) in F32, the config's metadata under llama.cpp's keys, alignment
// 32. The fp16, bf16 and Q8_0 conversions are gguf-py's (`numpy.astype(float16)`,
// `gguf.quants.BF16.quantize_blocks`, `gguf.quants.Q8_0.quantize_blocks`), bit for bit.

/// The tensor type of a GGUF save.
public enum GGUFSaveType: String, Sendable, CaseIterable {
    case f32, f16, bf16, q8_0

    /// "f32", "f16", "bf16" or "q8_0".
    public init?(name: String) { self.init(rawValue: name) }

    /// The ggml type of the 2-D weights.
    var ggmlType: GGMLType {
        switch self {
        case .f32: return .F32
        case .f16: return .F16
        case .bf16: return .BF16
        case .q8_0: return .Q8_0
        }
    }

    /// llama.cpp's `llama_ftype` (`general.file_type`).
    var fileType: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q8_0: return 7
        case .bf16: return 32
        }
    }
}

extension LlamaModel {
    /// Writes the model as a GGUF v3 file at `path`, atomically (a temporary file renamed into
    /// place). Metadata: `general.architecture` ("llama", or "qwen2" for a qwen2 model),
    /// `general.name` (`name`, else the loaded file's, else "model"), the config under llama.cpp's
    /// keys, `general.file_type`, then every other key (tokenizer.*, general.*) of the GGUF the
    /// model was loaded from, updated by `extra`, and `general.quantization_version`.
    /// Architecture keys and alignment are always the writer's own.
    public func saveGGUF(path: String, type: GGUFSaveType, metadata extra: GGUFMetadata? = nil, name: String? = nil) throws {
        try checkFullWeights("save_gguf")  // first: a quantized base cannot merge, its advice is dequantize
        if adapter != nil {
            throw DPOError.wrongState("save_gguf: the model has a LoRA adapter; merge_and_unload() it first (GGUF holds whole weights)")
        }
        let metadata = try ggufSaveMetadata(type: type, extra: extra, name: name)
        let plan = ggufTensorPlan(type: type)
        let alignment = 32
        var header = GGUFByteWriter()
        header.u32(GGUFFile.magic)
        header.u32(3)
        header.u64(UInt64(plan.count))
        header.u64(UInt64(metadata.count))
        for (key, value) in metadata.entries {
            header.string(key)
            header.u32(value.type.rawValue)
            header.value(value)
        }
        var offset = 0
        for t in plan {
            header.string(t.name)
            header.u32(UInt32(t.shape.count))
            for d in t.shape.reversed() { header.u64(UInt64(d)) }
            header.u32(t.type.rawValue)
            header.u64(UInt64(offset))
            offset += padded(t.byteCount, alignment)
        }
        header.pad(to: alignment)

        try writeFileAtomically(path) { out in
            try out.write(header.bytes)
            let scratch = try FloatBuffer(checkedCount: plan.filter(\.permute).map(\.count).max() ?? 0,
                                          for: "permuting the q/k projections for '\(path)'")
            for t in plan {
                var source = UnsafePointer(t.data)
                if t.permute {
                    ggufPermuteRows(t.data, scratch.pointer, heads: t.heads, headDim: config.resolvedHeadDim,
                                    columns: t.shape.count == 2 ? t.shape[1] : 1, toGGUF: true)
                    source = UnsafePointer(scratch.pointer)
                }
                try writeTensor(source, count: t.count, type: t.type, to: out)
                let padding = padded(t.byteCount, alignment) - t.byteCount
                if padding > 0 { try out.write([UInt8](repeating: 0, count: padding)) }
            }
        }
    }

    /// One tensor to write: llama.cpp name, HF shape, type, and where its values are.
    struct GGUFTensorPlan {
        let name: String
        let shape: [Int]
        let type: GGMLType
        let data: UnsafeMutablePointer<Float>
        let count: Int
        /// Rows permuted llama.cpp's way (q/k of the llama architecture), with `heads` heads.
        let permute: Bool
        let heads: Int
        /// Values computed for the file only (rope_freqs.weight), kept alive here.
        var owned: FloatBuffer? = nil
        var byteCount: Int { count / type.blockSize * type.bytesPerBlock }
    }

    func ggufTensorPlan(type: GGUFSaveType) -> [GGUFTensorPlan] {
        let base = parameters.pointer
        var plan: [GGUFTensorPlan] = layout.tensors.map { spec in
            var t = spec.shape.count == 2 ? type.ggmlType : .F32
            // As the converter: rows that are no whole number of Q8_0 blocks fall back to F16.
            if t == .Q8_0 && spec.shape[1] % 32 != 0 { t = .F16 }
            let (isQuery, permuted) = GGUFTensorNames.isPermuted(spec.name)
            return GGUFTensorPlan(name: GGUFTensorNames.gguf(spec.name) ?? spec.name, shape: spec.shape, type: t,
                                  data: base + spec.offset, count: spec.count,
                                  permute: permuted && config.modelType == "llama",
                                  heads: isQuery ? config.numAttentionHeads : config.numKeyValueHeads)
        }
        // llama3 rope scaling as llama.cpp stores it: per-frequency factors in `rope_freqs.weight`.
        if config.modelType == "llama", case .llama3 = config.ropeScaling {
            let factors = ggufLlama3RopeFactors(headDim: config.resolvedHeadDim, theta: config.ropeTheta, scaling: config.ropeScaling)
            let buffer = FloatBuffer(count: factors.count)
            for (i, f) in factors.enumerated() { buffer.pointer[i] = f }
            plan.insert(GGUFTensorPlan(name: "rope_freqs.weight", shape: [factors.count], type: .F32, data: buffer.pointer,
                                       count: factors.count, permute: false, heads: 0, owned: buffer), at: 0)
        }
        return plan
    }

    /// The metadata of a save (see `saveGGUF`).
    func ggufSaveMetadata(type: GGUFSaveType, extra: GGUFMetadata?, name: String?) throws -> GGUFMetadata {
        var m = GGUFMetadata()
        let own = config.ggufMetadata()
        let source = ggufMetadata ?? GGUFMetadata()
        m["general.architecture"] = own["general.architecture"]
        m["general.name"] = .string(name ?? extra?["general.name"]?.string ?? source["general.name"]?.string ?? "model")
        for (k, v) in own.entries where k != "general.architecture" { m[k] = v }
        m["general.file_type"] = .uint32(type.fileType)
        let reserved: Set<String> = ["general.architecture", "general.name", "general.file_type", "general.alignment",
                                     "general.quantization_version"]
        var architectures: Set<String> = [config.modelType]
        if let a = source["general.architecture"]?.string { architectures.insert(a) }
        func isArchitectureKey(_ key: String) -> Bool {
            architectures.contains(String(key.split(separator: ".", maxSplits: 1).first ?? ""))
        }
        var carried = GGUFMetadata()
        for (k, v) in source.entries where !reserved.contains(k) && !isArchitectureKey(k) { carried[k] = v }
        for (k, v) in (extra ?? GGUFMetadata()).entries {
            if reserved.contains(k) || isArchitectureKey(k) { continue }
            try checkWritable(v, key: k)
            carried[k] = v
        }
        for (k, v) in config.ggufTokenIds().entries where carried[k] == nil { carried[k] = v }
        try fitTokenList(&carried)
        for (k, v) in carried.entries { m[k] = v }
        m["general.quantization_version"] = .uint32(2)
        return m
    }

    /// llama.cpp sizes the token embedding by the token list (`tokenizer.ggml.tokens`), so a file
    /// whose list does not have vocab_size entries cannot be loaded. A shorter list (a tokenizer
    /// smaller than the padded embedding) is padded as convert_hf_to_gguf.py pads it: "[PAD<id>]"
    /// tokens of type unused (5), score -1000; a longer one is refused.
    private func fitTokenList(_ m: inout GGUFMetadata) throws {
        guard case .array(.string, var tokens)? = m["tokenizer.ggml.tokens"] else { return }
        let n = tokens.count, v = config.vocabSize
        guard n <= v else {
            throw DPOError.invalidArgument("the tokenizer has \(n) tokens, more than the model's vocab_size \(v) (llama.cpp could not load the file)")
        }
        if n == v { return }
        for i in n..<v { tokens.append(.string("[PAD\(i)]")) }
        m["tokenizer.ggml.tokens"] = .array(.string, tokens)
        for (key, pad) in [("tokenizer.ggml.token_type", 5.0), ("tokenizer.ggml.scores", -1000.0)] {
            guard case .array(let type, var items)? = m[key] else { continue }
            guard items.count == n, let value = GGUFValue.number(pad, as: type) else {
                throw DPOError.invalidArgument("GGUF metadata '\(key)' (\(items.count) \(type.name) values) does not match the \(n) tokens")
            }
            items += Array(repeating: value, count: v - n)
            m[key] = .array(type, items)
        }
    }

    /// An array value must hold elements of its declared type (recursively), or the file would be corrupt.
    private func checkWritable(_ value: GGUFValue, key: String) throws {
        guard case .array(let type, let items) = value else { return }
        for item in items {
            guard item.type == type else {
                throw DPOError.invalidArgument("GGUF metadata '\(key)': an array of \(type.name) holds a \(item.type.name)")
            }
            try checkWritable(item, key: key)
        }
    }

    /// Converts `count` floats to `type` in chunks and writes them.
    private func writeTensor(_ src: UnsafePointer<Float>, count: Int, type: GGMLType, to out: FileWriter) throws {
        if type == .F32 {
            try out.write(UnsafeRawBufferPointer(start: src, count: 4 * count))
            return
        }
        let chunk = 1 << 16  // elements, a multiple of 32
        var bytes = [UInt8](repeating: 0, count: chunk / 32 * 34 + 2 * chunk)
        var done = 0
        while done < count {
            let n = min(chunk, count - done)
            let used = bytes.withUnsafeMutableBufferPointer { b in ggufEncode(src + done, count: n, type: type, into: b.baseAddress!) }
            try bytes.withUnsafeBytes { try out.write(UnsafeRawBufferPointer(rebasing: $0[0..<used])) }
            done += n
        }
    }
}

/// `n` rounded up to a multiple of `alignment`.
private func padded(_ n: Int, _ alignment: Int) -> Int { (n + alignment - 1) / alignment * alignment }

/// Encodes `count` floats as F16, BF16 or Q8_0 (count a multiple of 32 for Q8_0) at `dst`;
/// returns the bytes written.
func ggufEncode(_ x: UnsafePointer<Float>, count: Int, type: GGMLType, into dst: UnsafeMutablePointer<UInt8>) -> Int {
    func store16(_ v: UInt16, _ at: Int) { dst[at] = UInt8(truncatingIfNeeded: v); dst[at + 1] = UInt8(truncatingIfNeeded: v >> 8) }
    switch type {
    case .F16:
        for i in 0..<count { store16(f16Bits(x[i]), 2 * i) }
        return 2 * count
    case .BF16:
        for i in 0..<count { store16(bf16Bits(x[i]), 2 * i) }
        return 2 * count
    case .Q8_0:
        for b in 0..<count / 32 { quantizeQ8_0(x + 32 * b, dst + 34 * b) }
        return count / 32 * 34
    default:
        return 0  // unreachable: the plan uses only these types and F32
    }
}

/// IEEE binary16 bits of `x`, rounded to nearest even (numpy's `astype(float16)`).
@inline(__always) func f16Bits(_ x: Float) -> UInt16 { Float16(x).bitPattern }

/// bfloat16 bits of `x` as gguf-py and ggml (`ggml_compute_fp32_to_bf16`) compute them: NaNs made
/// quiet, otherwise rounded to nearest even.
@inline(__always) func bf16Bits(_ x: Float) -> UInt16 {
    let n = x.bitPattern
    if n & 0x7FFF_FFFF > 0x7F80_0000 { return UInt16(truncatingIfNeeded: (n >> 16) | 64) }
    return UInt16(truncatingIfNeeded: (UInt64(n) + UInt64(0x7FFF + ((n >> 16) & 1))) >> 16)
}

/// One Q8_0 block as gguf-py's `Q8_0.quantize_blocks` (and ggml's `quantize_row_q8_0_ref`):
/// d = max|x| / 127, q = round-half-away(x * (1 / d)), d stored as fp16. NaN inputs give q = 0.
private func quantizeQ8_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt8>) {
    var amax: Float = 0
    for j in 0..<32 { amax = max(amax, abs(x[j])) }
    let d = amax / 127
    let id: Float = d == 0 ? 0 : 1 / d
    let h = f16Bits(d)
    y[0] = UInt8(truncatingIfNeeded: h)
    y[1] = UInt8(truncatingIfNeeded: h >> 8)
    for j in 0..<32 {
        // np_roundf: floor(a) + floor(2 (a - floor(a))) with the sign of x.
        let v = x[j] * id
        let a = abs(v), floored = a.rounded(.down)
        let r = floored + (2 * (a - floored)).rounded(.down)
        let q = v < 0 ? -r : r
        y[2 + j] = UInt8(bitPattern: Int8(exactly: q) ?? 0)
    }
}

/// Little-endian GGUF header bytes.
struct GGUFByteWriter {
    var bytes: [UInt8] = []

    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func string(_ s: String) {
        u64(UInt64(s.utf8.count))
        bytes += s.utf8
    }
    mutating func pad(to alignment: Int) {
        while bytes.count % alignment != 0 { bytes.append(0) }
    }

    mutating func value(_ v: GGUFValue) {
        switch v {
        case .uint8(let x): bytes.append(x)
        case .int8(let x): bytes.append(UInt8(bitPattern: x))
        case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { bytes += $0 }
        case .int16(let x): withUnsafeBytes(of: x.littleEndian) { bytes += $0 }
        case .uint32(let x): u32(x)
        case .int32(let x): u32(UInt32(bitPattern: x))
        case .float32(let x): u32(x.bitPattern)
        case .bool(let x): bytes.append(x ? 1 : 0)
        case .string(let s): string(s)
        case .uint64(let x): u64(x)
        case .int64(let x): u64(UInt64(bitPattern: x))
        case .float64(let x): u64(x.bitPattern)
        case .array(let type, let items):
            u32(type.rawValue)
            u64(UInt64(items.count))
            for item in items { value(item) }
        }
    }
}

extension GGUFValue {
    /// `x` as a value of the numeric `type` (nil for a non-numeric type or a value it cannot hold).
    static func number(_ x: Double, as type: GGUFValueType) -> GGUFValue? {
        switch type {
        case .uint8: return UInt8(exactly: x).map { .uint8($0) }
        case .int8: return Int8(exactly: x).map { .int8($0) }
        case .uint16: return UInt16(exactly: x).map { .uint16($0) }
        case .int16: return Int16(exactly: x).map { .int16($0) }
        case .uint32: return UInt32(exactly: x).map { .uint32($0) }
        case .int32: return Int32(exactly: x).map { .int32($0) }
        case .uint64: return UInt64(exactly: x).map { .uint64($0) }
        case .int64: return Int64(exactly: x).map { .int64($0) }
        case .float32: return .float32(Float(x))
        case .float64: return .float64(x)
        case .bool, .string, .array: return nil
        }
    }
}
