/// The linear layers of a decoder layer that LoRA can adapt, by PEFT's module names.
public enum LoraModule: Int, CaseIterable, Sendable {
    case q, k, v, o, gate, up, down

    /// The module's name in transformers' Llama (`q_proj` ...).
    public var name: String {
        switch self {
        case .q: return "q_proj"
        case .k: return "k_proj"
        case .v: return "v_proj"
        case .o: return "o_proj"
        case .gate: return "gate_proj"
        case .up: return "up_proj"
        case .down: return "down_proj"
        }
    }

    /// The module's path inside a decoder layer (`self_attn.q_proj`, `mlp.up_proj` ...).
    var path: String { rawValue < 4 ? "self_attn." + name : "mlp." + name }

    public init?(name: String) {
        guard let m = LoraModule.allCases.first(where: { $0.name == name }) else { return nil }
        self = m
    }
}

/// How the adapter matrices start (PEFT's `init_lora_weights`).
public enum LoraInit: String, Sendable {
    /// PEFT's default (`True`): A Kaiming-uniform like `nn.Linear` (`kaiming_uniform_(a=sqrt(5))`,
    /// bound 1/sqrt(in_features)), B zero, so a fresh adapter leaves the model unchanged.
    case `default`
    /// `"gaussian"`: A normal with std 1/r, B zero.
    case gaussian
    /// `False`: A and B both as `nn.Linear` initialises a weight (B's bound 1/sqrt(r)); the
    /// adapter changes the model from the start (tests, not training).
    case random
}

/// A LoRA configuration with PEFT's names and defaults (`peft.LoraConfig`; only what swift-dpo
/// implements: `bias="none"`, no DoRA, no per-layer rank or alpha patterns, no `modules_to_save`).
public struct LoraConfig: Equatable, Sendable {
    /// The rank r of every adapter.
    public var r = 8
    /// alpha: the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA).
    public var loraAlpha = 8.0
    /// Dropout on the adapter's input during training forwards (not the frozen product's).
    public var loraDropout = 0.0
    /// The adapted modules. nil: PEFT's default for Llama-family models, `q_proj` and `v_proj`.
    public var targetModules: [LoraModule]? = nil
    /// rsLoRA (Kalajdzievski 2023): scale alpha / sqrt(r).
    public var useRslora = false
    public var initLoraWeights = LoraInit.default
    /// Where the base model came from, written to `adapter_config.json` (PEFT's
    /// `base_model_name_or_path`; nil is written as null).
    public var baseModelNameOrPath: String?

    public init(r: Int = 8, loraAlpha: Double = 8, loraDropout: Double = 0, targetModules: [LoraModule]? = nil,
                useRslora: Bool = false, initLoraWeights: LoraInit = .default) {
        self.r = r; self.loraAlpha = loraAlpha; self.loraDropout = loraDropout
        self.targetModules = targetModules; self.useRslora = useRslora; self.initLoraWeights = initLoraWeights
    }

    /// The adapted modules, in layer order.
    public var modules: [LoraModule] {
        let set = Set((targetModules ?? [.q, .v]).map(\.rawValue))
        return LoraModule.allCases.filter { set.contains($0.rawValue) }
    }

    /// The factor of B A x in the forward.
    public var scaling: Double { useRslora ? loraAlpha / Double(r).squareRoot() : loraAlpha / Double(r) }

    public func validate() throws {
        guard r >= 1, r <= 1 << 16 else { throw DPOError.invalidArgument("lora r must be in [1, 65536], got \(r)") }
        guard loraAlpha.isFinite, loraAlpha != 0 else {
            throw DPOError.invalidArgument("lora_alpha must be finite and non-zero, got \(loraAlpha)")
        }
        guard loraDropout >= 0, loraDropout < 1 else {
            throw DPOError.invalidArgument("lora_dropout must be in [0, 1), got \(loraDropout)")
        }
        if let t = targetModules, t.isEmpty { throw DPOError.invalidArgument("target_modules is empty") }
    }

    /// Parses `target_modules` as PEFT takes it: a list of module names, one name, or "all-linear"
    /// (every linear layer of the decoder layers; the LM head is never adapted).
    public static func targetModules(_ names: [String]) throws -> [LoraModule] {
        var out: [LoraModule] = []
        for n in names {
            if n == "all-linear" { return LoraModule.allCases }
            if n == "lm_head" || n == "embed_tokens" {
                throw DPOError.invalidArgument("target_modules: '\(n)' is not supported (LoRA adapts the decoder layers' linear layers: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or all-linear)")
            }
            guard let m = LoraModule(name: n) else {
                throw DPOError.invalidArgument("target_modules: unknown module '\(n)' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or all-linear)")
            }
            if !out.contains(m) { out.append(m) }
        }
        if out.isEmpty { throw DPOError.invalidArgument("target_modules is empty") }
        return out
    }
}

// MARK: - adapter_config.json

extension LoraConfig {
    /// The config as PEFT writes `adapter_config.json` (task_type CAUSAL_LM, peft_type LORA; the
    /// features swift-dpo does not implement at their "off" values).
    public var jsonObject: JSONObject {
        var o = JSONObject()
        o["alpha_pattern"] = .object(JSONObject())
        o["auto_mapping"] = .null
        o["base_model_name_or_path"] = baseModelNameOrPath.map { .string($0) } ?? .null
        o["bias"] = .string("none")
        o["exclude_modules"] = .null
        o["fan_in_fan_out"] = .bool(false)
        o["inference_mode"] = .bool(true)
        switch initLoraWeights {
        case .default: o["init_lora_weights"] = .bool(true)
        case .gaussian: o["init_lora_weights"] = .string("gaussian")
        case .random: o["init_lora_weights"] = .bool(false)
        }
        o["layer_replication"] = .null
        o["layers_pattern"] = .null
        o["layers_to_transform"] = .null
        o["lora_alpha"] = .number(loraAlpha)
        o["lora_bias"] = .bool(false)
        o["lora_dropout"] = .number(loraDropout)
        o["modules_to_save"] = .null
        o["peft_type"] = .string("LORA")
        o["r"] = .number(Double(r))
        o["rank_pattern"] = .object(JSONObject())
        o["revision"] = .null
        o["target_modules"] = .array(modules.map { .string($0.name) })
        o["task_type"] = .string("CAUSAL_LM")
        o["use_dora"] = .bool(false)
        o["use_rslora"] = .bool(useRslora)
        return o
    }

    /// Reads a PEFT `adapter_config.json` object. Features swift-dpo does not implement (DoRA,
    /// biases, rank/alpha patterns, `modules_to_save`, layer selection, fan_in_fan_out) are refused
    /// with the key's name when set; keys of other PEFT methods' options are ignored.
    public init(json o: JSONObject, source: String = "adapter_config.json") throws {
        self.init()
        func fail(_ m: String) -> DPOError { .format("\(source): \(m)") }
        if let t = o["peft_type"], t != .string("LORA") {
            throw fail("peft_type \(JSON.serialize(t, pretty: false)) is not LORA")
        }
        if let t = o["task_type"], t != .null, t != .string("CAUSAL_LM") {
            throw fail("task_type \(JSON.serialize(t, pretty: false)) is not CAUSAL_LM")
        }
        guard let rv = o["r"]?.int, rv >= 1, rv <= 1 << 16 else { throw fail("'r' must be an integer in [1, 65536]") }
        r = rv
        if let a = o["lora_alpha"] {
            guard let d = a.double, d.isFinite, d != 0 else { throw fail("'lora_alpha' must be a finite non-zero number") }
            loraAlpha = d
        }
        if let d = o["lora_dropout"] {
            guard let p = d.double, p >= 0, p < 1 else { throw fail("'lora_dropout' must be a number in [0, 1)") }
            loraDropout = p
        }
        if let b = o["use_rslora"], b != .null {
            guard let v = b.bool else { throw fail("'use_rslora' must be true or false") }
            useRslora = v
        }
        switch o["init_lora_weights"] ?? .bool(true) {
        case .bool(true): initLoraWeights = .default
        case .bool(false): initLoraWeights = .random
        case .string("gaussian"): initLoraWeights = .gaussian
        case let v: throw fail("init_lora_weights \(JSON.serialize(v, pretty: false)) is not supported (true, false or \"gaussian\")")
        }
        if let b = o["bias"], b != .string("none") {
            throw fail("bias \(JSON.serialize(b, pretty: false)) is not supported (only \"none\")")
        }
        if let m = o["modules_to_save"], m != .null, m != .array([]) {
            throw fail("modules_to_save \(JSON.serialize(m, pretty: false)) is not supported (fully trained extra modules such as lm_head or embed_tokens)")
        }
        // Options whose non-default values change the adapter's math or placement.
        let off: [(String, [JSONValue])] = [
            ("use_dora", [.bool(false)]), ("lora_bias", [.bool(false)]), ("fan_in_fan_out", [.bool(false)]),
            ("rank_pattern", [.object(JSONObject())]), ("alpha_pattern", [.object(JSONObject())]),
            ("layers_to_transform", []), ("layers_pattern", [.array([])]), ("exclude_modules", [.array([])]),
            ("layer_replication", []), ("target_parameters", [.array([])]), ("trainable_token_indices", []),
            ("use_qalora", [.bool(false)]), ("alora_invocation_tokens", []), ("use_bdlora", [.bool(false)]),
        ]
        for (key, allowed) in off {
            if let v = o[key], v != .null, !allowed.contains(v) {
                throw fail("'\(key)' = \(JSON.serialize(v, pretty: false)) is not supported by swift-dpo")
            }
        }
        switch o["target_modules"] ?? .null {
        case .null: targetModules = nil
        case .string(let s):
            do { targetModules = try LoraConfig.targetModules([s]) } catch {
                throw fail("target_modules '\(s)' is not supported (a regular expression: give a list of module names)")
            }
        case .array(let a):
            let names = try a.map { v -> String in
                guard let s = v.string else { throw fail("target_modules must hold strings") }
                return s
            }
            do { targetModules = try LoraConfig.targetModules(names) } catch let e as DPOError { throw fail(e.message) }
        default: throw fail("target_modules must be a list of module names")
        }
        if let b = o["base_model_name_or_path"]?.string { baseModelNameOrPath = b }
    }
}
