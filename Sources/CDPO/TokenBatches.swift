import CDPOHeader
import DPO

/// Most tokens one batch may hold in all its lists (keeps the engine's int32 stream indices and
/// positions far from overflow, even when a prompt is packed twice).
let maxBatchTokens = Int64(DPO_MAX_BATCH_TOKENS)

/// Reads `count` CSR token lists. Checks the lengths and offsets (not the ids: the engine checks
/// them against the vocabulary and names the pair and position). `argument` is the C name of the
/// lists, e.g. "batch->chosen".
func readTokenLists(_ l: dpo_token_lists, count: Int, _ argument: String) throws -> [[Int32]] {
    let n = try checkedInt(l.num_ids, "\(argument).num_ids", 0...Int64(Int32.max))
    let offsets = try required(l.offsets, "\(argument).offsets")
    if n > 0 && l.ids == nil { throw APIError.invalid("\(argument).ids is NULL but num_ids = \(n)") }
    if offsets[0] != 0 { throw APIError.invalid("\(argument).offsets[0] = \(offsets[0]) must be 0") }
    for i in 0..<count where offsets[i + 1] < offsets[i] {
        throw APIError.invalid("\(argument).offsets are not non-decreasing: offsets[\(i + 1)] = \(offsets[i + 1]) < offsets[\(i)] = \(offsets[i])")
    }
    if offsets[count] > Int64(n) {
        throw APIError.invalid("\(argument).offsets[\(count)] = \(offsets[count]) is past the end of the token array (num_ids = \(n))")
    }
    guard let ids = l.ids else { return [[Int32]](repeating: [], count: count) }
    return (0..<count).map { i in
        Array(UnsafeBufferPointer(start: ids + Int(offsets[i]), count: Int(offsets[i + 1] - offsets[i])))
    }
}

/// The number of items of a batch: at least 1.
func batchCount(_ v: Int64, _ argument: String) throws -> Int {
    try checkedInt(v, argument, 1...maxBatchTokens)
}

/// Checks each list's `num_ids`, then refuses batches holding more than `maxBatchTokens` tokens
/// in all. `lists` pairs each list with its C name.
func checkBatchTokens(_ lists: [(dpo_token_lists, String)], _ argument: String) throws {
    var total: Int64 = 0
    for (l, name) in lists { total += Int64(try checkedInt(l.num_ids, "\(name).num_ids", 0...Int64(Int32.max))) }
    if total > maxBatchTokens {
        throw APIError.invalid("\(argument) holds \(total) tokens, more than the limit of \(maxBatchTokens)")
    }
    // Before the lists are copied: the engine checks the packing of what it is given, this the copy.
    try MemoryLimit.checkBatch(tokens: Int(total), argument)
}

/// A preference batch as engine pairs (with the precomputed reference log-probs if given).
func readPreferenceBatch(_ p: UnsafePointer<dpo_preference_batch>?, _ argument: String = "batch",
                         withReference: Bool = true) throws -> [PreferencePair] {
    let b = try readStruct(p, argument)
    let n = try batchCount(b.num_pairs, "\(argument)->num_pairs")
    try checkBatchTokens([(b.prompts, "\(argument)->prompts"), (b.chosen, "\(argument)->chosen"),
                          (b.rejected, "\(argument)->rejected")], argument)
    let prompts = try readTokenLists(b.prompts, count: n, "\(argument)->prompts")
    let chosen = try readTokenLists(b.chosen, count: n, "\(argument)->chosen")
    let rejected = try readTokenLists(b.rejected, count: n, "\(argument)->rejected")
    var refChosen: UnsafePointer<Double>? = nil, refRejected: UnsafePointer<Double>? = nil
    if withReference {
        switch (b.ref_chosen_logps, b.ref_rejected_logps) {
        case (nil, nil): break
        case (let c?, let r?): refChosen = c; refRejected = r
        case (nil, _): throw APIError.invalid("\(argument)->ref_chosen_logps is NULL but ref_rejected_logps is not: give both or neither")
        case (_, nil): throw APIError.invalid("\(argument)->ref_rejected_logps is NULL but ref_chosen_logps is not: give both or neither")
        }
    }
    return try (0..<n).map { i in
        var pair = PreferencePair(promptIds: prompts[i], chosenIds: chosen[i], rejectedIds: rejected[i])
        if let refChosen, let refRejected {
            for (name, v) in [("ref_chosen_logps", refChosen[i]), ("ref_rejected_logps", refRejected[i])]
            where !v.isFinite || v > 0 {
                throw APIError.invalid("\(name)[\(i)] = \(v): reference log-probs must be finite and <= 0")
            }
            pair.refChosenLogps = refChosen[i]
            pair.refRejectedLogps = refRejected[i]
        }
        return pair
    }
}

/// A completion batch as (prompt, completion) token arrays.
func readCompletionBatch(_ p: UnsafePointer<dpo_completion_batch>?, _ argument: String = "batch") throws
    -> [(prompt: [Int32], completion: [Int32])] {
    let b = try readStruct(p, argument)
    let n = try batchCount(b.count, "\(argument)->count")
    try checkBatchTokens([(b.prompts, "\(argument)->prompts"), (b.completions, "\(argument)->completions")], argument)
    let prompts = try readTokenLists(b.prompts, count: n, "\(argument)->prompts")
    let completions = try readTokenLists(b.completions, count: n, "\(argument)->completions")
    return (0..<n).map { (prompts[$0], completions[$0]) }
}
