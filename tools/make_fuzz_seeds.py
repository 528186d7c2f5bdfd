#!/usr/bin/env python3
"""Writes the seed corpus of the loader fuzz target (Tests/fuzz/corpus/): small valid model
folders in the target's input format, [uint32 LE n][n bytes config.json][model.safetensors],
and small GGUF files (an input starting with the GGUF magic is a .gguf file): a tiny llama model
packed here (F32 norms, F16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 matrices with random blocks) and the GGUF
test fixtures under 64 KiB (tools/make_gguf_fixtures.py). Standard library only. Run from the repository root: python3 tools/make_fuzz_seeds.py"""
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


GGUF_FIXTURES = os.path.join(os.path.dirname(__file__), "..", "Tests", "DPOTests", "Fixtures", "gguf")
# ggml type code, block size, bytes per block, fp16 field offsets
GGML = {"F32": (0, 1, 4, []), "F16": (1, 1, 2, [0]), "Q4_0": (2, 32, 18, [0]), "Q4_1": (3, 32, 20, [0, 2]),
        "Q5_0": (6, 32, 22, [0]), "Q5_1": (7, 32, 24, [0, 2]), "Q8_0": (8, 32, 34, [0])}


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_model(types):
    """A llama GGUF v3: hidden 32, 2 heads, 1 layer, vocab 8; matrices cycle through `types`."""
    h, inter, vocab = 32, 64, 8
    kvs = [("general.architecture", 8, gguf_string("llama"))]
    for key, v in [("block_count", 1), ("context_length", 64), ("embedding_length", h), ("feed_forward_length", inter),
                   ("attention.head_count", 2), ("attention.head_count_kv", 1)]:
        kvs.append(("llama." + key, 4, struct.pack("<I", v)))
    kvs.append(("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)))
    tensors = [("token_embd.weight", [h, vocab]), ("blk.0.attn_norm.weight", [h]), ("blk.0.attn_q.weight", [h, h]),
               ("blk.0.attn_k.weight", [h, 16]), ("blk.0.attn_v.weight", [h, 16]), ("blk.0.attn_output.weight", [h, h]),
               ("blk.0.ffn_norm.weight", [h]), ("blk.0.ffn_gate.weight", [h, inter]), ("blk.0.ffn_up.weight", [h, inter]),
               ("blk.0.ffn_down.weight", [inter, h]), ("output_norm.weight", [h]), ("output.weight", [h, vocab])]
    head = struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        head += gguf_string(k) + struct.pack("<I", t) + v
    data, i = b"", 0
    for name, dims in tensors:
        tname = "F32" if len(dims) == 1 else types[i % len(types)]
        i += len(dims) - 1
        code, block, size, halves = GGML[tname]
        count = dims[0] * (dims[1] if len(dims) > 1 else 1)
        if tname == "F32":
            blob = b"".join(struct.pack("<f", 1.0 if "norm" in name else random.uniform(-0.5, 0.5)) for _ in range(count))
        else:
            blocks = []
            for _ in range(count // block):
                b = bytearray(random.getrandbits(8) for _ in range(size))
                for off in halves:
                    b[off:off + 2] = struct.pack("<e", random.uniform(-0.05, 0.05))
                blocks.append(bytes(b))
            blob = b"".join(blocks)
        head += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        head += struct.pack("<IQ", code, len(data))
        data += blob + b"\0" * (-len(blob) % 32)
    head += b"\0" * (-len(head) % 32)
    return head + data


def main():
    random.seed(0)
    os.makedirs(OUT, exist_ok=True)
    for name, (config, dtype) in SEEDS.items():
        text = json.dumps(config).encode()
        blob = struct.pack("<I", len(text)) + text + safetensors(tensors_of(config), dtype)
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(blob)
        print(name, len(blob), "bytes")
    for name, types in {"gguf-llama-f16-q8": ["F16", "Q8_0"], "gguf-llama-q4-q5": ["Q4_0", "Q4_1", "Q5_0", "Q5_1"]}.items():
        blob = gguf_model(types)
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(blob)
        print(name, len(blob), "bytes")
    for sub in ["quants", "metadata", "models"]:
        folder = os.path.join(GGUF_FIXTURES, sub)
        for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            path = os.path.join(folder, file)
            if file.endswith(".gguf") and os.path.getsize(path) <= 65536:
                with open(path, "rb") as src, open(os.path.join(OUT, f"gguf-{sub}-{file[:-5]}.bin"), "wb") as f:
                    f.write(src.read())


if __name__ == "__main__":
    main()
