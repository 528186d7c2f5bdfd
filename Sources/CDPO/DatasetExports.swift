import CDPOHeader
import DPO

// Dataset handles: rows in TRL's formats, tokenized for one trainer as its TRL counterpart
// prepares them (PreparedDataset), kept as token ids for the training loop.

final class DatasetObject: HandleObject {
    override class var typeName: String { "dpo_dataset" }
    var dataset: PreparedDataset
    init(_ dataset: PreparedDataset) { self.dataset = dataset }

    func preferenceRows() throws -> [TokenizedPreference] {
        guard dataset.kind == .preference else {
            throw APIError.invalid("the dataset was made for an SFT trainer, not a DPO trainer")
        }
        try dataset.finish()
        return dataset.preferenceRows
    }

    func sftRows() throws -> [TokenizedSFT] {
        guard dataset.kind == .sft else {
            throw APIError.invalid("the dataset was made for a DPO trainer, not an SFT trainer")
        }
        try dataset.finish()
        return dataset.sftRows
    }
}

/// A dataset for the trainer behind `trainer`, with its data settings and model vocabulary.
func createDataset<T: CTrainer>(_ ctx: CallContext, _ trainer: OpaquePointer?, _ type: T.Type, kind: PreparedDataset.Kind,
                                _ tokenizer: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) throws {
    let out = try required(out, "out_dataset")
    let t = try TrainerCalls<T>.use(ctx, trainer)
    let tok = try ctx.useOptional(tokenizer, TokenizerObject.self, "tokenizer")
    let data = try DatasetTokenizer(tokenizer: tok?.tokenizer, vocabSize: t.trainer.model.config.vocabSize, config: t.data)
    out.pointee = try Registry.register(DatasetObject(PreparedDataset(kind: kind, tokenizer: data)))
}

@_cdecl("dpo_trainer_dataset_create")
public func dpo_trainer_dataset_create(_ trainer: OpaquePointer?, _ tokenizer: OpaquePointer?,
                                       _ outDataset: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_trainer_dataset_create") { ctx in
        try createDataset(ctx, trainer, DPOTrainer.self, kind: .preference, tokenizer, outDataset)
    }
}

@_cdecl("dpo_sft_trainer_dataset_create")
public func dpo_sft_trainer_dataset_create(_ trainer: OpaquePointer?, _ tokenizer: OpaquePointer?,
                                           _ outDataset: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_sft_trainer_dataset_create") { ctx in
        try createDataset(ctx, trainer, SFTTrainer.self, kind: .sft, tokenizer, outDataset)
    }
}

@_cdecl("dpo_dataset_add_rows")
public func dpo_dataset_add_rows(_ dataset: OpaquePointer?, _ json: UnsafePointer<CChar>?, _ length: UInt) -> dpo_status {
    exportCall("dpo_dataset_add_rows") { ctx in
        let d = try ctx.use(dataset, DatasetObject.self, "dataset")
        let text = try readText(json, length, "json")
        try d.dataset.add(json: text)
    }
}

@_cdecl("dpo_dataset_add_file")
public func dpo_dataset_add_file(_ dataset: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> dpo_status {
    exportCall("dpo_dataset_add_file") { ctx in
        let d = try ctx.use(dataset, DatasetObject.self, "dataset")
        try d.dataset.addFile(path: try readPath(path, "path"))
    }
}

@_cdecl("dpo_dataset_get_info")
public func dpo_dataset_get_info(_ dataset: OpaquePointer?, _ outInfo: UnsafeMutablePointer<dpo_dataset_info>?) -> dpo_status {
    exportCall("dpo_dataset_get_info") { ctx in
        let d = try ctx.use(dataset, DatasetObject.self, "dataset").dataset
        let out = try outputStruct(outInfo, "out_info")
        var info = dpo_dataset_info()
        info.struct_size = MemoryLayout<dpo_dataset_info>.size
        let c = d.counts
        info.rows = Int64(c.rows); info.kept = Int64(c.kept); info.dropped = Int64(c.dropped); info.truncated = Int64(c.truncated)
        info.format = StaticCString.get(d.format?.rawValue ?? "")
        out.pointee = info
    }
}

@_cdecl("dpo_dataset_row_json")
public func dpo_dataset_row_json(_ dataset: OpaquePointer?, _ index: Int64, _ buffer: UnsafeMutablePointer<CChar>?,
                                 _ capacity: UInt, _ outNeeded: UnsafeMutablePointer<UInt>?) -> dpo_status {
    exportCall("dpo_dataset_row_json") { ctx in
        let d = try ctx.use(dataset, DatasetObject.self, "dataset").dataset
        guard index >= 0 && index < Int64(d.count) else {
            throw APIError.invalid("index = \(index) is out of range [0, \(d.count))")
        }
        try writeText(JSON.serialize(.object(try d.rowJSON(Int(index))), pretty: false), buffer, capacity, outNeeded, "buffer")
    }
}

@_cdecl("dpo_dataset_free")
public func dpo_dataset_free(_ dataset: OpaquePointer?) -> dpo_status {
    exportCall("dpo_dataset_free") { _ in try Registry.remove(dataset, DatasetObject.self, "dataset") }
}

@_cdecl("dpo_dataset_last_error")
public func dpo_dataset_last_error(_ dataset: OpaquePointer?) -> UnsafePointer<CChar>? {
    Registry.peek(dataset, DatasetObject.self)?.message.pointer ?? StaticCString.get("invalid dpo_dataset handle")
}
