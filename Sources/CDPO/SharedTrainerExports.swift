import CDPOHeader
import DPO

// The exports both trainers have (step, evaluate, the distributed grain, checkpoints, free), once:
// each dpo_trainer_* / dpo_sft_trainer_* function calls these with its name and handle type.

enum TrainerCalls<T: CTrainer> {
    static func use(_ ctx: CallContext, _ handle: OpaquePointer?) throws -> TrainerObject<T> {
        try ctx.use(handle, TrainerObject<T>.self, "trainer")
    }

    static func step(_ name: String, _ handle: OpaquePointer?, _ batch: UnsafePointer<T.CBatch>?,
                     _ outMetrics: UnsafeMutablePointer<T.CMetrics>?) -> dpo_status {
        exportCall(name) { ctx in
            let t = try use(ctx, handle).trainer
            let out = try optionalOutput(outMetrics, "out_metrics")
            let r = try t.stepMetrics(try T.examples(batch))
            out?.pointee = T.cMetrics(r.metrics, stepped: r.stepped, globalStep: t.globalStep)
        }
    }

    static func evaluate(_ name: String, _ handle: OpaquePointer?, _ batch: UnsafePointer<T.CBatch>?,
                         _ outMetrics: UnsafeMutablePointer<T.CMetrics>?) -> dpo_status {
        exportCall(name) { ctx in
            let t = try use(ctx, handle).trainer
            let out = try outputStruct(outMetrics, "out_metrics")
            let m = try t.evaluate(try T.examples(batch))
            out.pointee = T.cMetrics(m, stepped: false, globalStep: t.globalStep)
        }
    }

    static func accumulate(_ name: String, _ handle: OpaquePointer?, _ batch: UnsafePointer<T.CBatch>?,
                           _ outMetrics: UnsafeMutablePointer<T.CMetrics>?) -> dpo_status {
        exportCall(name) { ctx in
            let t = try use(ctx, handle).trainer
            let out = try optionalOutput(outMetrics, "out_metrics")
            let m = try t.accumulate(try T.examples(batch))
            out?.pointee = T.cMetrics(m, stepped: false, globalStep: t.globalStep)
        }
    }

    static func applyOptimizer(_ name: String, _ handle: OpaquePointer?, _ outMetrics: UnsafeMutablePointer<T.CMetrics>?) -> dpo_status {
        exportCall(name) { ctx in
            let t = try use(ctx, handle).trainer
            let out = try optionalOutput(outMetrics, "out_metrics")
            let m = try t.applyOptimizer()
            out?.pointee = T.cMetrics(m, stepped: true, globalStep: t.globalStep)
        }
    }

    /// The model's gradient buffer, allocated (zeroed) if no backward has run yet. The engine
    /// allocates it once per model and never replaces it, so the pointer is stable.
    static func gradients(_ name: String, _ handle: OpaquePointer?, _ outData: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                          _ outCount: UnsafeMutablePointer<Int64>?) -> dpo_status {
        exportCall(name) { ctx in
            let model = try use(ctx, handle).trainer.model
            let data = try required(outData, "out_data"), count = try required(outCount, "out_count")
            if model.trainableGradients == nil { try model.zeroGradients() }
            guard let g = model.trainableGradients else { throw APIError.internal("the gradient buffer could not be allocated") }
            data.pointee = g.pointer
            count.pointee = Int64(g.count)
        }
    }

    static func globalStep(_ name: String, _ handle: OpaquePointer?, _ outStep: UnsafeMutablePointer<Int64>?) -> dpo_status {
        exportCall(name) { ctx in
            let t = try use(ctx, handle).trainer
            try required(outStep, "out_step").pointee = Int64(t.globalStep)
        }
    }

    static func saveCheckpoint(_ name: String, _ handle: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
        exportCall(name) { ctx in
            let t = try use(ctx, handle).trainer
            try t.saveCheckpoint(directory: try readPath(directory, "directory"), extraState: [:])
        }
    }

    static func loadCheckpoint(_ name: String, _ handle: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
        exportCall(name) { ctx in
            let t = try use(ctx, handle).trainer
            let dir = try readPath(directory, "directory")
            try guardCheckpoint(dir)
            try t.loadCheckpoint(directory: dir)
        }
    }

    static func free(_ name: String, _ handle: OpaquePointer?) -> dpo_status {
        exportCall(name) { _ in try Registry.remove(handle, TrainerObject<T>.self, "trainer") }
    }

    static func lastError(_ handle: OpaquePointer?) -> UnsafePointer<CChar>? {
        Registry.peek(handle, TrainerObject<T>.self)?.message.pointer ?? StaticCString.get("invalid \(T.handleName) handle")
    }
}

/// Before the engine reads a checkpoint: the bounds and memory checks of its model directories.
func guardCheckpoint(_ directory: String) throws {
    let base = directory.hasSuffix("/") ? directory : directory + "/"
    try guardModelDirectory(base + "model")
    try guardModelDirectory(base + "reference")
}

/// Optimizer state (gradients, two AdamW moments, an accumulation backup) and a snapshot
/// reference must fit next to the weights.
func checkTrainerMemory(_ config: LlamaConfig, copies: Double) throws {
    try MemoryBudget.checkModel(config, copies: copies, "the optimizer state of this model")
}

/// A host's JSON of TRL config fields (NULL or "" = none), its counts bounded before the engine
/// computes with them.
extension DPOTrainingConfig {
    init(fields text: UnsafePointer<CChar>?, _ argument: String) throws {
        try self.init(json: try readFieldsJSON(text, argument))
    }
}

extension SFTTrainingConfig {
    init(fields text: UnsafePointer<CChar>?, _ argument: String) throws {
        try self.init(json: try readFieldsJSON(text, argument))
    }
}
