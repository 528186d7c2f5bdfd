#!/usr/bin/env python3
"""Writes the seed corpus of the loader fuzz target (Tests/fuzz/corpus/): small valid model
folders in the target's input format, [uint32 LE n][n bytes config.json][model.safetensors].
Standard library only. Run from the repository root: python3 tools/make_fuzz_seeds.py"""
import json
import os
import random
import struct

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "fuzz", "corpus")
DTYPES = {"F32": ("<f", 4), "F16": ("<e", 2), "BF16": (None, 2)}


def tensor_bytes(values, dtype):
    if dtype == "BF16":
        return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:] for v in values)
    fmt, _ = DTYPES[dtype]
    return b"".join(struct.pack(fmt, v) for v in values)


def safetensors(tensors, dtype):
    header, data = {}, b""
    for name, shape in tensors:
        count = 1
        for d in shape:
            count *= d
        values = [random.uniform(-0.5, 0.5) for _ in range(count)]
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            values = [1.0] * count
        blob = tensor_bytes(values, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def tensors_of(c):
    h, hd, inter, v = c["hidden_size"], c.get("head_dim", c["hidden_size"] // c["num_attention_heads"]), c["intermediate_size"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    qkv_bias = c["model_type"] == "qwen2" or c.get("attention_bias", False)
    out = [("model.embed_tokens.weight", [v, h])]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", [h]), (p + "self_attn.q_proj.weight", [q, h]),
                (p + "self_attn.k_proj.weight", [kv, h]), (p + "self_attn.v_proj.weight", [kv, h]),
                (p + "self_attn.o_proj.weight", [h, q]), (p + "post_attention_layernorm.weight", [h]),
                (p + "mlp.gate_proj.weight", [inter, h]), (p + "mlp.up_proj.weight", [inter, h]),
                (p + "mlp.down_proj.weight", [h, inter])]
        if qkv_bias:
            out += [(p + "self_attn.q_proj.bias", [q]), (p + "self_attn.k_proj.bias", [kv]), (p + "self_attn.v_proj.bias", [kv])]
    out.append(("model.norm.weight", [h]))
    if not c.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", [v, h]))
    return out


SEEDS = {
    "llama-tied-f32": ({"model_type": "llama", "vocab_size": 8, "hidden_size": 4, "intermediate_size": 6,
                        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}, "F32"),
    "qwen2-untied-f16": ({"model_type": "qwen2", "vocab_size": 6, "hidden_size": 4, "intermediate_size": 4,
                          "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
                          "tie_word_embeddings": False, "rope_theta": 1000000.0}, "F16"),
    "llama3-rope-bf16": ({"model_type": "llama", "vocab_size": 5, "hidden_size": 4, "intermediate_size": 4,
                          "num_hidden_layers": 1, "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 4,
                          "tie_word_embeddings": True, "rms_norm_eps": 1e-5,
                          "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}, "BF16"),
}


def main():
    random.seed(0)
    os.makedirs(OUT, exist_ok=True)
    for name, (config, dtype) in SEEDS.items():
        text = json.dumps(config).encode()
        blob = struct.pack("<I", len(text)) + text + safetensors(tensors_of(config), dtype)
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(blob)
        print(name, len(blob), "bytes")


if __name__ == "__main__":
    main()
