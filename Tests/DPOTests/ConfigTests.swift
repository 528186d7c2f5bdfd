import XCTest
@testable import DPO

/// `LlamaConfig(json:)` and `json(base:)` on the config.json files real checkpoints publish
/// (transformers-4 spelling: top-level `rope_theta` + `rope_scaling`), the transformers-5 spelling
/// (`rope_parameters`), defaults, refusals and round trips.
final class ConfigTests: XCTestCase {

    // MARK: - Published config.json texts

    static let smolLM2_135M = """
    {
      "architectures": [
        "LlamaForCausalLM"
      ],
      "attention_bias": false,
      "attention_dropout": 0.0,
      "bos_token_id": 0,
      "eos_token_id": 0,
      "hidden_act": "silu",
      "hidden_size": 576,
      "initializer_range": 0.041666666666666664,
      "intermediate_size": 1536,
      "is_llama_config": true,
      "max_position_embeddings": 8192,
      "model_type": "llama",
      "num_attention_heads": 9,
      "num_hidden_layers": 30,
      "num_key_value_heads": 3,
      "pretraining_tp": 1,
      "rms_norm_eps": 1e-05,
      "rope_interleaved": false,
      "rope_scaling": null,
      "rope_theta": 100000,
      "tie_word_embeddings": true,
      "torch_dtype": "bfloat16",
      "transformers_version": "4.42.3",
      "use_cache": true,
      "vocab_size": 49152
    }
    """

    static let tinyLlama_1_1B = """
    {
      "architectures": [
        "LlamaForCausalLM"
      ],
      "attention_bias": false,
      "bos_token_id": 1,
      "eos_token_id": 2,
      "hidden_act": "silu",
      "hidden_size": 2048,
      "initializer_range": 0.02,
      "intermediate_size": 5632,
      "max_position_embeddings": 2048,
      "model_type": "llama",
      "num_attention_heads": 32,
      "num_hidden_layers": 22,
      "num_key_value_heads": 4,
      "pretraining_tp": 1,
      "rms_norm_eps": 1e-05,
      "rope_scaling": null,
      "rope_theta": 10000.0,
      "tie_word_embeddings": false,
      "torch_dtype": "bfloat16",
      "transformers_version": "4.35.0",
      "use_cache": true,
      "vocab_size": 32000
    }
    """

    static let llama3_2_1B = """
    {
      "architectures": [
        "LlamaForCausalLM"
      ],
      "attention_bias": false,
      "attention_dropout": 0.0,
      "bos_token_id": 128000,
      "eos_token_id": [
        128001,
        128008,
        128009
      ],
      "head_dim": 64,
      "hidden_act": "silu",
      "hidden_size": 2048,
      "initializer_range": 0.02,
      "intermediate_size": 8192,
      "max_position_embeddings": 131072,
      "mlp_bias": false,
      "model_type": "llama",
      "num_attention_heads": 32,
      "num_hidden_layers": 16,
      "num_key_value_heads": 8,
      "pretraining_tp": 1,
      "rms_norm_eps": 1e-05,
      "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3"
      },
      "rope_theta": 500000.0,
      "tie_word_embeddings": true,
      "torch_dtype": "bfloat16",
      "transformers_version": "4.45.0.dev0",
      "use_cache": true,
      "vocab_size": 128256
    }
    """

    static let qwen2_0_5B = """
    {
      "architectures": [
        "Qwen2ForCausalLM"
      ],
      "attention_dropout": 0.0,
      "bos_token_id": 151643,
      "eos_token_id": 151643,
      "hidden_act": "silu",
      "hidden_size": 896,
      "initializer_range": 0.02,
      "intermediate_size": 4864,
      "max_position_embeddings": 131072,
      "max_window_layers": 24,
      "model_type": "qwen2",
      "num_attention_heads": 14,
      "num_hidden_layers": 24,
      "num_key_value_heads": 2,
      "rms_norm_eps": 1e-06,
      "rope_theta": 1000000.0,
      "sliding_window": 131072,
      "tie_word_embeddings": true,
      "torch_dtype": "bfloat16",
      "transformers_version": "4.40.1",
      "use_cache": true,
      "use_sliding_window": false,
      "vocab_size": 151936
    }
    """

    // MARK: - Helpers

    private func parse(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> LlamaConfig {
        try LlamaConfig(json: JSON.parse(text))
    }

    private func object(_ text: String) throws -> JSONObject {
        try XCTUnwrap(JSON.parse(text).object)
    }

    /// `text` with `change` applied to its top-level object, re-serialized.
    private func edited(_ text: String, _ change: (inout JSONObject) -> Void) throws -> String {
        var o = try object(text)
        change(&o)
        return JSON.serialize(.object(o))
    }

    /// Asserts that loading `text` throws `DPOError.format` whose message starts with "config.json:"
    /// and contains each of `words`.
    private func assertRefused(_ text: String, _ words: [String], file: StaticString = #filePath, line: UInt = #line) {
        do {
            let c = try parse(text)
            XCTFail("expected a refusal containing \(words), loaded \(c)", file: file, line: line)
        } catch DPOError.format(let message) {
            XCTAssertTrue(message.hasPrefix("config.json: "), "'\(message)'", file: file, line: line)
            for w in words where !message.contains(w) {
                XCTFail("error '\(message)' does not contain '\(w)'", file: file, line: line)
            }
        } catch {
            XCTFail("expected DPOError.format, got \(error)", file: file, line: line)
        }
    }

    // MARK: - Real checkpoints

    func testSmolLM2_135M() throws {
        let c = try parse(Self.smolLM2_135M)
        XCTAssertEqual(c.modelType, "llama")
        XCTAssertEqual(c.vocabSize, 49152)
        XCTAssertEqual(c.hiddenSize, 576)
        XCTAssertEqual(c.intermediateSize, 1536)
        XCTAssertEqual(c.numHiddenLayers, 30)
        XCTAssertEqual(c.numAttentionHeads, 9)
        XCTAssertEqual(c.numKeyValueHeads, 3)
        XCTAssertNil(c.headDim)
        XCTAssertEqual(c.resolvedHeadDim, 64)
        XCTAssertTrue(c.tieWordEmbeddings)
        XCTAssertEqual(c.ropeTheta, 100_000)
        XCTAssertEqual(c.ropeScaling, .none)
        XCTAssertEqual(c.rmsNormEps, 1e-5)
        XCTAssertEqual(c.maxPositionEmbeddings, 8192)
        XCTAssertEqual(c.initializerRange, 0.041666666666666664)
        XCTAssertEqual(c.hiddenAct, "silu")
        XCTAssertEqual(c.bosTokenId, 0)
        XCTAssertEqual(c.eosTokenIds, [0])
        XCTAssertNil(c.padTokenId)
        XCTAssertFalse(c.attentionBias)
        XCTAssertFalse(c.mlpBias)
        XCTAssertFalse(c.qkvBias)
        XCTAssertFalse(c.outputProjectionBias)
        // Tied: no lm_head tensor; 30 layers x 9 tensors + embedding + final norm.
        let layout = ParameterLayout(config: c)
        XCTAssertNil(layout.tensor(named: "lm_head.weight"))
        XCTAssertEqual(layout.tensors.count, 30 * 9 + 2)
        XCTAssertEqual(layout.tensor(named: "model.layers.29.self_attn.k_proj.weight")?.shape, [192, 576])
        XCTAssertEqual(layout.count, 134_515_008)   // SmolLM2-135M's parameter count
    }

    func testTinyLlama_1_1B() throws {
        let c = try parse(Self.tinyLlama_1_1B)
        XCTAssertEqual(c.vocabSize, 32000)
        XCTAssertEqual(c.hiddenSize, 2048)
        XCTAssertEqual(c.intermediateSize, 5632)
        XCTAssertEqual(c.numHiddenLayers, 22)
        XCTAssertEqual(c.numAttentionHeads, 32)
        XCTAssertEqual(c.numKeyValueHeads, 4)
        XCTAssertEqual(c.resolvedHeadDim, 64)
        XCTAssertFalse(c.tieWordEmbeddings)
        XCTAssertEqual(c.ropeTheta, 10_000)
        XCTAssertEqual(c.ropeScaling, .none)
        XCTAssertEqual(c.rmsNormEps, 1e-5)
        XCTAssertEqual(c.maxPositionEmbeddings, 2048)
        XCTAssertEqual(c.bosTokenId, 1)
        XCTAssertEqual(c.eosTokenIds, [2])
        let layout = ParameterLayout(config: c)
        XCTAssertEqual(layout.tensor(named: "lm_head.weight")?.shape, [32000, 2048])
        XCTAssertEqual(layout.count, 1_100_048_384)   // TinyLlama-1.1B's parameter count
    }

    func testLlama3_2_1B() throws {
        let c = try parse(Self.llama3_2_1B)
        XCTAssertEqual(c.vocabSize, 128_256)
        XCTAssertEqual(c.hiddenSize, 2048)
        XCTAssertEqual(c.intermediateSize, 8192)
        XCTAssertEqual(c.numHiddenLayers, 16)
        XCTAssertEqual(c.numAttentionHeads, 32)
        XCTAssertEqual(c.numKeyValueHeads, 8)
        XCTAssertEqual(c.headDim, 64)
        XCTAssertTrue(c.tieWordEmbeddings)
        XCTAssertEqual(c.ropeTheta, 500_000)
        XCTAssertEqual(c.ropeScaling, .llama3(factor: 32, lowFreqFactor: 1, highFreqFactor: 4,
                                              originalMaxPositionEmbeddings: 8192))
        XCTAssertEqual(c.maxPositionEmbeddings, 131_072)
        XCTAssertEqual(c.bosTokenId, 128_000)
        XCTAssertEqual(c.eosTokenIds, [128_001, 128_008, 128_009])
        XCTAssertEqual(ParameterLayout(config: c).count, 1_235_814_400)   // Llama-3.2-1B's parameter count
    }

    func testQwen2_0_5B() throws {
        let c = try parse(Self.qwen2_0_5B)
        XCTAssertEqual(c.modelType, "qwen2")
        XCTAssertEqual(c.hiddenSize, 896)
        XCTAssertEqual(c.numAttentionHeads, 14)
        XCTAssertEqual(c.numKeyValueHeads, 2)
        XCTAssertEqual(c.resolvedHeadDim, 64)
        XCTAssertEqual(c.ropeTheta, 1_000_000)
        XCTAssertEqual(c.rmsNormEps, 1e-6)
        XCTAssertEqual(c.eosTokenIds, [151_643])
        XCTAssertFalse(c.attentionBias)
        XCTAssertTrue(c.qkvBias)
        XCTAssertFalse(c.outputProjectionBias)
        let layout = ParameterLayout(config: c)
        XCTAssertEqual(layout.tensor(named: "model.layers.0.self_attn.q_proj.bias")?.shape, [896])
        XCTAssertEqual(layout.tensor(named: "model.layers.0.self_attn.k_proj.bias")?.shape, [128])
        XCTAssertEqual(layout.tensor(named: "model.layers.23.self_attn.v_proj.bias")?.shape, [128])
        XCTAssertNil(layout.tensor(named: "model.layers.0.self_attn.o_proj.bias"))
        XCTAssertNil(layout.tensor(named: "model.layers.0.mlp.gate_proj.bias"))
        XCTAssertEqual(layout.count, 494_032_768)   // Qwen2-0.5B's parameter count
        // Sliding-window attention is not implemented: refused, not silently ignored.
        assertRefused(try edited(Self.qwen2_0_5B) { $0["use_sliding_window"] = .bool(true) }, ["use_sliding_window"])
    }

    // MARK: - RoPE spellings

    func testRopeSpellingsLoadTheSameConfig() throws {
        let legacy = try parse(Self.llama3_2_1B)
        // transformers 4.x before 4.45 wrote "type" instead of "rope_type".
        let typeKey = try parse(try edited(Self.llama3_2_1B) { o in
            var rs = o["rope_scaling"]!.object!
            rs["type"] = rs["rope_type"]; rs["rope_type"] = nil
            o["rope_scaling"] = .object(rs)
        })
        XCTAssertEqual(typeKey, legacy)
        // transformers 5: rope_parameters holding rope_theta, no top-level rope_theta / rope_scaling.
        let v5 = try parse(try edited(Self.llama3_2_1B) { o in
            var rp = o["rope_scaling"]!.object!
            rp["rope_theta"] = o["rope_theta"]
            o["rope_parameters"] = .object(rp)
            o["rope_scaling"] = nil
            o["rope_theta"] = nil
        })
        XCTAssertEqual(v5, legacy)
        // Default RoPE in both spellings.
        let smol = try parse(Self.smolLM2_135M)
        let smolV5 = try parse(try edited(Self.smolLM2_135M) { o in
            o["rope_parameters"] = .object(["rope_type": .string("default"), "rope_theta": .number(100_000)])
            o["rope_scaling"] = nil
            o["rope_theta"] = nil
        })
        XCTAssertEqual(smolV5, smol)
        // rope_scaling absent, null, or {"rope_type": "default"}: no scaling.
        for variant in [JSONValue?.none, .null, .object(["rope_type": .string("default")])] {
            let c = try parse(try edited(Self.tinyLlama_1_1B) { $0["rope_scaling"] = variant })
            XCTAssertEqual(c.ropeScaling, .none)
            XCTAssertEqual(c.ropeTheta, 10_000)
        }
        // rope_parameters null falls back to the legacy keys.
        let nullParams = try parse(try edited(Self.llama3_2_1B) { $0["rope_parameters"] = .null })
        XCTAssertEqual(nullParams, legacy)
        // No rope_theta anywhere: transformers' default 10000.
        let noTheta = try parse(try edited(Self.smolLM2_135M) { $0["rope_theta"] = nil })
        XCTAssertEqual(noTheta.ropeTheta, 10_000)
    }

    func testUnsupportedRopeTypesAreRefusedByName() throws {
        for type in ["yarn", "linear", "dynamic", "longrope"] {
            let scaling: JSONValue = .object(["rope_type": .string(type), "factor": .number(4),
                                              "original_max_position_embeddings": .number(4096)])
            assertRefused(try edited(Self.tinyLlama_1_1B) { $0["rope_scaling"] = scaling }, ["'\(type)'", "not supported"])
            // Old spelling "type".
            assertRefused(try edited(Self.tinyLlama_1_1B) {
                $0["rope_scaling"] = .object(["type": .string(type), "factor": .number(2)])
            }, ["'\(type)'"])
            // transformers-5 spelling.
            assertRefused(try edited(Self.tinyLlama_1_1B) {
                $0["rope_parameters"] = .object(["rope_type": .string(type), "rope_theta": .number(10_000), "factor": .number(2)])
            }, ["'\(type)'"])
        }
    }

    func testLlama3ScalingNeedsItsFields() throws {
        for key in ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"] {
            assertRefused(try edited(Self.llama3_2_1B) { o in
                var rs = o["rope_scaling"]!.object!
                rs[key] = nil
                o["rope_scaling"] = .object(rs)
            }, ["'\(key)'"])
            assertRefused(try edited(Self.llama3_2_1B) { o in
                var rs = o["rope_scaling"]!.object!
                rs[key] = .string("8")
                o["rope_scaling"] = .object(rs)
            }, ["'\(key)'"])
        }
        // low_freq_factor must be below high_freq_factor.
        assertRefused(try edited(Self.llama3_2_1B) { o in
            var rs = o["rope_scaling"]!.object!
            rs["low_freq_factor"] = .number(4)
            o["rope_scaling"] = .object(rs)
        }, ["low_freq_factor"])
    }

    // MARK: - Token ids

    func testEOSTokenIdIntOrList() throws {
        func eos(_ value: JSONValue?) throws -> [Int] {
            // (A vocabulary that holds Llama 3's ids: ids outside it are refused.)
            try parse(try edited(Self.tinyLlama_1_1B) { $0["eos_token_id"] = value; $0["vocab_size"] = .number(128_256) }).eosTokenIds
        }
        XCTAssertEqual(try eos(.number(2)), [2])
        XCTAssertEqual(try eos(.array([.number(128_001), .number(128_008), .number(128_009)])), [128_001, 128_008, 128_009])
        XCTAssertEqual(try eos(.array([.number(7)])), [7])
        XCTAssertEqual(try eos(.array([])), [])
        XCTAssertEqual(try eos(.null), [])
        assertRefused(try edited(Self.tinyLlama_1_1B) { $0["eos_token_id"] = .string("2") }, ["'eos_token_id'"])
        assertRefused(try edited(Self.tinyLlama_1_1B) { $0["eos_token_id"] = .array([.number(1), .string("a")]) },
                      ["'eos_token_id'"])
        assertRefused(try edited(Self.tinyLlama_1_1B) { $0["eos_token_id"] = .array([.number(1.5)]) }, ["'eos_token_id'"])
        // pad / bos: null is "none".
        let c = try parse(try edited(Self.tinyLlama_1_1B) { $0["pad_token_id"] = .number(0); $0["bos_token_id"] = .null })
        XCTAssertEqual(c.padTokenId, 0)
        XCTAssertNil(c.bosTokenId)
    }

    // MARK: - Defaults

    func testDefaultsWhenFieldsAreAbsent() throws {
        let c = try parse(#"{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}"#)
        XCTAssertEqual(c.numKeyValueHeads, 4, "num_key_value_heads defaults to num_attention_heads")
        XCTAssertNil(c.headDim)
        XCTAssertEqual(c.resolvedHeadDim, 16, "head_dim = hidden_size / num_attention_heads")
        // transformers' LlamaConfig defaults.
        XCTAssertEqual(c.vocabSize, 32000)
        XCTAssertEqual(c.intermediateSize, 11008)
        XCTAssertEqual(c.numHiddenLayers, 32)
        XCTAssertEqual(c.hiddenAct, "silu")
        XCTAssertEqual(c.maxPositionEmbeddings, 2048)
        XCTAssertEqual(c.initializerRange, 0.02)
        XCTAssertEqual(c.rmsNormEps, 1e-6)
        XCTAssertEqual(c.ropeTheta, 10_000)
        XCTAssertEqual(c.ropeScaling, .none)
        XCTAssertFalse(c.tieWordEmbeddings)
        XCTAssertFalse(c.attentionBias)
        XCTAssertFalse(c.mlpBias)
        XCTAssertNil(c.padTokenId)
        // An empty object is transformers' default LlamaConfig (Llama-2-7B shape).
        let d = try parse("{}")
        XCTAssertEqual(d.modelType, "llama")
        XCTAssertEqual(d.hiddenSize, 4096)
        XCTAssertEqual(d.numAttentionHeads, 32)
        XCTAssertEqual(d.numKeyValueHeads, 32)
        XCTAssertEqual(d.resolvedHeadDim, 128)
        // null values count as absent.
        let n = try parse(#"{"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": null, "head_dim": null, "rms_norm_eps": null}"#)
        XCTAssertEqual(n.numKeyValueHeads, 4)
        XCTAssertEqual(n.resolvedHeadDim, 16)
        XCTAssertEqual(n.rmsNormEps, 1e-6)
    }

    /// transformers' `LlamaConfig` defaults `bos_token_id` to 1 and `eos_token_id` to 2 when a
    /// config.json leaves them out (`LlamaConfig.from_dict({}).bos_token_id == 1`), as the
    /// struct's own property defaults say; an explicit null means none.
    func testAbsentTokenIdsDefaultLikeTransformers() throws {
        let c = try parse(#"{"hidden_size": 64, "num_attention_heads": 4}"#)
        XCTAssertEqual(c.bosTokenId, 1, "absent bos_token_id")
        XCTAssertEqual(c.eosTokenIds, [2], "absent eos_token_id")
        XCTAssertNil(c.padTokenId)
    }

    // MARK: - Refusals

    func testHiddenActOtherThanSiluIsRefused() throws {
        for act in ["gelu", "gelu_pytorch_tanh", "relu", "swish"] {
            assertRefused(try edited(Self.tinyLlama_1_1B) { $0["hidden_act"] = .string(act) }, ["hidden_act", "'\(act)'"])
        }
    }

    func testWrongJSONTypesAreRefusedNamingTheKey() throws {
        let cases: [(String, JSONValue)] = [
            ("hidden_size", .string("2048")), ("vocab_size", .number(32000.5)), ("num_hidden_layers", .bool(true)),
            ("num_attention_heads", .array([.number(32)])), ("num_key_value_heads", .string("4")),
            ("intermediate_size", .object([:])), ("head_dim", .number(64.5)), ("max_position_embeddings", .string("2048")),
            ("tie_word_embeddings", .string("true")), ("attention_bias", .number(0)), ("mlp_bias", .string("false")),
            ("rms_norm_eps", .string("1e-5")), ("rope_theta", .string("10000")), ("initializer_range", .bool(false)),
            ("model_type", .number(1)), ("hidden_act", .array([])), ("bos_token_id", .string("1")),
            ("pad_token_id", .number(0.5)), ("rope_scaling", .string("llama3")), ("rope_parameters", .number(5)),
        ]
        for (key, value) in cases {
            assertRefused(try edited(Self.tinyLlama_1_1B) { $0[key] = value }, ["'\(key)'"])
        }
        // Not an object at all.
        for text in ["[]", "1", "null", "\"config\""] {
            assertRefused(text, ["not a JSON object"])
        }
    }

    /// A non-string `rope_type` is a wrong JSON type like any other: it must not silently fall back to
    /// default RoPE (which would run a llama3 checkpoint with the wrong frequencies).
    func testNonStringRopeTypeIsRefused() throws {
        assertRefused(try edited(Self.llama3_2_1B) { o in
            var rs = o["rope_scaling"]!.object!
            rs["rope_type"] = .number(3)
            o["rope_scaling"] = .object(rs)
        }, ["'rope_type'"])
        assertRefused(try edited(Self.tinyLlama_1_1B) {
            $0["rope_parameters"] = .object(["rope_type": .array([.string("llama3")]), "rope_theta": .number(10_000)])
        }, ["'rope_type'"])
    }

    func testInconsistentShapesAreRefused() throws {
        // hidden_size not divisible by the heads and no head_dim.
        assertRefused(try edited(Self.smolLM2_135M) { $0["num_attention_heads"] = .number(7) },
                      ["hidden_size 576", "num_attention_heads 7"])
        // heads not a multiple of the KV heads.
        assertRefused(try edited(Self.smolLM2_135M) { $0["num_key_value_heads"] = .number(4) },
                      ["num_attention_heads 9", "num_key_value_heads 4"])
        // An explicit head_dim makes a non-divisible hidden size fine (Gemma-like layouts) ...
        let explicit = try parse(try edited(Self.smolLM2_135M) { $0["num_attention_heads"] = .number(7); $0["num_key_value_heads"] = .number(7); $0["head_dim"] = .number(64) })
        XCTAssertEqual(explicit.resolvedHeadDim, 64)
        XCTAssertEqual(ParameterLayout(config: explicit).tensor(named: "model.layers.0.self_attn.o_proj.weight")?.shape, [576, 448])
        // ... but it must be even (rotary halves).
        assertRefused(try edited(Self.smolLM2_135M) { $0["head_dim"] = .number(63) }, ["head_dim", "63"])
        // Sizes must be positive.
        for key in ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "max_position_embeddings", "head_dim"] {
            assertRefused(try edited(Self.smolLM2_135M) { $0[key] = .number(0) }, [key])
        }
        for key in ["rms_norm_eps", "rope_theta"] {
            assertRefused(try edited(Self.smolLM2_135M) { $0[key] = .number(-1) }, [key])
        }
        // Other architectures are refused by name.
        assertRefused(try edited(Self.smolLM2_135M) { $0["model_type"] = .string("mistral") }, ["model_type", "'mistral'"])
    }

    // MARK: - Writing and round trips

    func testJSONOutputUsesTransformers5SpellingAndKeepsUnknownKeys() throws {
        let base = try object(Self.smolLM2_135M)
        let c = try LlamaConfig(json: .object(base))
        let o = try XCTUnwrap(c.json(base: base).object)
        XCTAssertNil(o["rope_scaling"])
        XCTAssertNil(o["rope_theta"])
        XCTAssertEqual(o["rope_parameters"], .object(["rope_theta": .number(100_000), "rope_type": .string("default")]))
        XCTAssertNil(o["head_dim"], "an unset head_dim stays unset (transformers derives it)")
        XCTAssertEqual(o["eos_token_id"], .number(0))
        XCTAssertEqual(o["pad_token_id"], .null)
        XCTAssertEqual(o["tie_word_embeddings"], .bool(true))
        XCTAssertEqual(o["dtype"], .string("float32"))
        XCTAssertEqual(o["torch_dtype"], .string("float32"), "weights are saved as F32")
        // Keys swift-dpo does not model are kept as they were.
        for key in ["is_llama_config", "rope_interleaved", "pretraining_tp", "use_cache", "transformers_version",
                    "attention_dropout", "architectures"] {
            XCTAssertEqual(o[key], base[key], key)
        }

        let llama = try parse(Self.llama3_2_1B).json().object!
        XCTAssertEqual(llama["architectures"], .array([.string("LlamaForCausalLM")]))
        XCTAssertEqual(llama["rope_parameters"], .object([
            "rope_theta": .number(500_000), "rope_type": .string("llama3"), "factor": .number(32),
            "low_freq_factor": .number(1), "high_freq_factor": .number(4),
            "original_max_position_embeddings": .number(8192),
        ]))
        XCTAssertEqual(llama["eos_token_id"], .array([.number(128_001), .number(128_008), .number(128_009)]))
        XCTAssertEqual(llama["attention_bias"], .bool(false))
        XCTAssertNil(llama["torch_dtype"])

        let qwen = try parse(Self.qwen2_0_5B).json().object!
        XCTAssertEqual(qwen["architectures"], .array([.string("Qwen2ForCausalLM")]))
        XCTAssertEqual(qwen["model_type"], .string("qwen2"))
        XCTAssertNil(qwen["attention_bias"], "Qwen2Config has no attention_bias")
    }

    private var roundTripConfigs: [(String, LlamaConfig)] {
        get throws {
            var list: [(String, LlamaConfig)] = []
            for (name, text) in [("SmolLM2-135M", Self.smolLM2_135M), ("TinyLlama-1.1B", Self.tinyLlama_1_1B),
                                 ("Llama-3.2-1B", Self.llama3_2_1B), ("Qwen2-0.5B", Self.qwen2_0_5B)] {
                list.append((name, try parse(text)))
            }
            list += [("gqaTied", TestModels.gqaTied), ("mhaUntiedBias", TestModels.mhaUntiedBias),
                     ("qwen2", TestModels.qwen2)]
            var odd = TestModels.gqaTied
            odd.eosTokenIds = []; odd.bosTokenId = nil; odd.padTokenId = 3; odd.mlpBias = true
            odd.initializerRange = 0.1 + 0.2   // not a short decimal
            list.append(("odd", odd))
            return list
        }
    }

    /// config -> json -> text -> config gives the same config (head_dim compared as resolved: the
    /// writer always spells it out; see testRoundTripKeepsAnUnsetHeadDimUnset).
    func testRoundTrip() throws {
        for (name, config) in try roundTripConfigs {
            for base in [JSONObject(), try object(Self.smolLM2_135M)] {
                let text = JSON.serialize(config.json(base: base))
                let back = try LlamaConfig(json: JSON.parse(text))
                var expected = config
                expected.headDim = config.resolvedHeadDim
                var got = back
                got.headDim = back.resolvedHeadDim
                XCTAssertEqual(got, expected, name)
                // And a second trip is a fixed point, text included.
                XCTAssertEqual(JSON.serialize(back.json(base: base)), text, name)
            }
        }
    }

    /// The round trip is exact for every field: a config that leaves head_dim to be derived
    /// (SmolLM2, TinyLlama, Qwen2, and every config built with `LlamaConfig(vocabSize:...)` without
    /// `headDim:`) must still compare equal after config -> json -> config.
    func testRoundTripKeepsAnUnsetHeadDimUnset() throws {
        for (name, config) in try roundTripConfigs where config.headDim == nil {
            let back = try LlamaConfig(json: JSON.parse(JSON.serialize(config.json())))
            XCTAssertTrue(back == config, "\(name): config -> json -> config differs: headDim nil came back as "
                          + "\(back.headDim.map(String.init) ?? "nil")")
        }
    }
}
