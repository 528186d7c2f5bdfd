import DPO

/// Memory checks the C layer makes before it asks the engine for something large, so a request
/// that cannot fit is refused (DPO_ERR_OUT_OF_MEMORY) before anything is allocated. The limit is
/// the engine's `MemoryLimit` (physical memory, `ulimit -v`, the cgroup's limit). Activations are
/// not estimated here: the engine checks each workspace (and generation's caches) against the same
/// limit when it allocates them, for every door (C, Python, Swift, command line).
enum MemoryBudget {
    /// A count for messages: exact below 2^53, else in exponent form.
    static func countText(_ d: Double) -> String {
        d.isFinite && d >= 0 && d < 0x1p53 ? String(Int64(d)) : "\(d)"
    }

    /// A model's weights (`copies` = 1) or weights plus training state.
    static func checkModel(_ c: LlamaConfig, copies: Double, _ what: String) throws {
        try MemoryLimit.check(ParameterLayout.parameterCount(c) * 4 * copies, what)
    }
}
