#!/usr/bin/env python3
"""Generate the GGUF reference fixtures for swift-dpo's tests (dev-only tool).

Writes ``Tests/DPOTests/Fixtures/gguf/`` (all small, committed):

* ``quants/<TYPE>.gguf`` + ``quants/<TYPE>.f32`` -- one GGUF per tensor type swift-dpo
  dequantizes (F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K), written with
  gguf-py's ``GGUFWriter`` holding one 2-D tensor ``t`` of random block bytes (2 rows of 3
  blocks, 2 rows of 2 super-blocks for the k-quants) whose fp16 scale fields are random
  *finite* fp16 values (subnormals and negatives included), and the expected fp32 values from
  ``gguf.quants.dequantize`` as raw little-endian float32 (row-major).
* ``metadata/v3.gguf`` (gguf-py's writer, ``general.alignment`` 64) and ``metadata/v2.gguf``
  (packed by this script byte by byte, version 2, ``general.alignment`` 8, with empty arrays,
  which gguf-py's writer refuses): every metadata value type, arrays of every type, nested
  arrays (three levels), and a few tensors; ``metadata/<name>.json`` lists what the file holds
  (keys in order with types and values -- integers as decimal strings, floats as their bit
  patterns -- and the tensors with ggml dims, type, absolute offset and byte size), checked
  here against gguf-py's ``GGUFReader``.
* ``models/<name>.gguf`` + ``models/<name>.json`` -- tiny random models written the way
  llama.cpp's ``convert_hf_to_gguf.py`` writes them (llama: q/k rows permuted by its
  ``LlamaModel.permute``; qwen2: not permuted), and the per-token log-probs and greedy tokens
  that transformers computes after loading that GGUF with
  ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``:
    - ``llama_gqa_untied``: F32 weights, GQA (4 heads / 2 kv), untied lm head;
    - ``llama_gqa_q8``: the same model with its 2-D weights in Q8_0 (gguf-py quantize);
    - ``qwen2_tied_bias``: F32, qwen2 with q/k/v biases, tied embeddings.
* ``corrupt/*.gguf`` + ``corrupt/expected.json`` -- one small broken (or refused) file per
  failure class, with the substrings the error must contain (see ``corrupt/README.md``).
* ``smollm2.json`` -- with transformers loading ``.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf``
  (skipped when absent): the summed completion log-probs of 8 (prompt, completion) pairs
  (prompts through the GGUF's chat template) and 16 greedy tokens for 4 chat prompts.

How to run (from the repository root, with the oracle venv: torch, transformers, gguf, numpy)
    .venv-oracle/bin/python tools/make_gguf_fixtures.py
Deterministic (fixed seeds, one torch thread). It rewrites Tests/DPOTests/Fixtures/gguf/ only.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT, GGUFValueType as VT

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests/DPOTests/Fixtures/gguf"
SMOL = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"

# ---------------------------------------------------------------------------------------------
# (a) one GGUF per dequantizable type

# Byte ranges of the fp16 scale fields inside one block, per type (ggml-common.h).
FP16_FIELDS = {
    QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
    QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
}


def random_finite_f16(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random fp16 bit patterns with exponent != 31 (finite; zeros and subnormals included)."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bad = (bits & 0x7C00) == 0x7C00
    bits[bad] &= 0xBFFF  # clear the exponent's top bit: finite
    return bits


def make_quants(rng: np.random.Generator) -> None:
    d = OUT / "quants"
    d.mkdir(parents=True)
    for qt in [QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1,
               QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K]:
        block, size = gguf.GGML_QUANT_SIZES[qt]
        rows = 2
        if qt == QT.F32:
            raw = rng.standard_normal((rows, 96)).astype(np.float32).view(np.uint8)
            values = raw.view(np.float32)
        elif qt == QT.F16:
            raw = random_finite_f16(rng, rows * 96).reshape(rows, 96).view(np.uint8)
            values = raw.view(np.float16).astype(np.float32)
        elif qt == QT.BF16:
            bits = rng.integers(0, 1 << 16, size=rows * 96, dtype=np.uint32).astype(np.uint16)
            bits[(bits & 0x7F80) == 0x7F80] &= 0xBFFF  # finite
            raw = bits.reshape(rows, 96).view(np.uint8)
            values = gguf.quants.dequantize(raw, qt)
        else:
            nblocks = 3 if block == 32 else 2
            raw = rng.integers(0, 256, size=(rows, nblocks, size), dtype=np.uint16).astype(np.uint8)
            for off in FP16_FIELDS[qt]:
                raw[:, :, off:off + 2] = random_finite_f16(rng, rows * nblocks).reshape(rows, nblocks, 1).view(np.uint8)
            raw = raw.reshape(rows, nblocks * size)
            values = gguf.quants.dequantize(raw, qt)
        values = np.ascontiguousarray(values, dtype=np.float32)
        assert np.isfinite(values).all(), qt.name
        w = gguf.GGUFWriter(str(d / f"{qt.name}.gguf"), "llama")
        w.add_tensor("t", np.ascontiguousarray(raw), raw_dtype=qt)
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        (d / f"{qt.name}.f32").write_bytes(values.astype("<f4").tobytes())
        # gguf-py reads it back to the same values.
        r = gguf.GGUFReader(str(d / f"{qt.name}.gguf"))
        t = r.tensors[0]
        assert t.tensor_type == qt and list(t.shape) == [values.shape[1], rows], (qt.name, t.shape)
        back = gguf.quants.dequantize(np.asarray(t.data), qt)
        assert np.array_equal(back.reshape(values.shape).view(np.uint32), values.view(np.uint32))


# ---------------------------------------------------------------------------------------------
# (b) metadata of every type, v3 (gguf-py's writer) and v2 (packed here)

def enc(vtype: VT, value, sub=None):
    """The JSON form of a value: {"t": type, "v": ...} (ints as strings, floats as bit patterns)."""
    if vtype == VT.ARRAY:
        return {"t": "ARRAY", "e": sub[0].name, "v": [enc(sub[0], x, sub[1:] if len(sub) > 1 else None) for x in value]}
    if vtype == VT.FLOAT32:
        return {"t": vtype.name, "v": str(struct.unpack("<I", struct.pack("<f", value))[0])}
    if vtype == VT.FLOAT64:
        return {"t": vtype.name, "v": str(struct.unpack("<Q", struct.pack("<d", value))[0])}
    if vtype == VT.BOOL:
        return {"t": vtype.name, "v": bool(value)}
    if vtype == VT.STRING:
        return {"t": vtype.name, "v": value}
    return {"t": vtype.name, "v": str(int(value))}


SCALARS = [
    ("test.uint8", VT.UINT8, 255), ("test.int8", VT.INT8, -128), ("test.uint16", VT.UINT16, 65535),
    ("test.int16", VT.INT16, -32768), ("test.uint32", VT.UINT32, 4294967295), ("test.int32", VT.INT32, -2147483648),
    ("test.float32", VT.FLOAT32, -1.5e-39), ("test.bool_true", VT.BOOL, True), ("test.bool_false", VT.BOOL, False),
    ("test.string", VT.STRING, "héllo wörld ✓ \u0000 end"), ("test.empty_string", VT.STRING, ""),
    ("test.uint64", VT.UINT64, 18446744073709551615), ("test.int64", VT.INT64, -9223372036854775808),
    ("test.float64", VT.FLOAT64, 3.141592653589793e-300),
]
ARRAYS = [
    ("test.arr.uint8", [VT.UINT8], [0, 1, 255]), ("test.arr.int8", [VT.INT8], [-1, 127]),
    ("test.arr.uint16", [VT.UINT16], [7]), ("test.arr.int16", [VT.INT16], [-300, 300]),
    ("test.arr.uint32", [VT.UINT32], [1, 2, 3]), ("test.arr.int32", [VT.INT32], [-5, 5]),
    ("test.arr.float32", [VT.FLOAT32], [0.1, -2.5, 1e30]), ("test.arr.bool", [VT.BOOL], [True, False, True]),
    ("test.arr.string", [VT.STRING], ["a", "", "ünï"]), ("test.arr.uint64", [VT.UINT64], [2 ** 63 + 5]),
    ("test.arr.int64", [VT.INT64], [-(2 ** 62)]), ("test.arr.float64", [VT.FLOAT64], [1e-310, 2.0]),
    ("test.arr.nested", [VT.ARRAY, VT.INT32], [[1, 2], [3], [4, 5, 6]]),
    ("test.arr.nested3", [VT.ARRAY, VT.ARRAY, VT.STRING], [[["x", "y"], ["z"]], [["w"]]]),
]
EMPTY_ARRAYS = [("test.arr.empty_uint32", [VT.UINT32], []), ("test.arr.empty_string", [VT.STRING], [])]


class Packer:
    """A minimal independent GGUF packer (little-endian), used for v2 and the corrupt files."""

    def __init__(self):
        self.b = bytearray()

    def u8(self, v): self.b += struct.pack("<B", v)
    def u32(self, v): self.b += struct.pack("<I", v)
    def u64(self, v): self.b += struct.pack("<Q", v)

    def string(self, s):
        e = s.encode("utf-8") if isinstance(s, str) else s
        self.u64(len(e)); self.b += e

    def value(self, vt: VT, v, sub=None):
        fmt = {VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h", VT.UINT32: "<I", VT.INT32: "<i",
               VT.FLOAT32: "<f", VT.BOOL: "<?", VT.UINT64: "<Q", VT.INT64: "<q", VT.FLOAT64: "<d"}.get(vt)
        if fmt:
            self.b += struct.pack(fmt, v)
        elif vt == VT.STRING:
            self.string(v)
        else:
            self.u32(sub[0]); self.u64(len(v))
            for x in v:
                self.value(sub[0], x, sub[1:])

    def kv(self, key, vt, v, sub=None):
        self.string(key); self.u32(vt); self.value(vt, v, sub)


def pack_gguf(version: int, kvs: list, tensors: list, alignment: int = 32) -> bytes:
    """kvs: (key, VT, value, sub); tensors: (name, dims, qt, raw bytes). Tensors laid out in order."""
    p = Packer()
    p.u32(0x46554747); p.u32(version); p.u64(len(tensors)); p.u64(len(kvs))
    for k in kvs:
        p.kv(*k)
    offset = 0
    offsets = []
    for name, dims, qt, raw in tensors:
        p.string(name); p.u32(len(dims))
        for d in dims:
            p.u64(d)
        p.u32(qt); p.u64(offset)
        offsets.append(offset)
        offset += (len(raw) + alignment - 1) // alignment * alignment
    while len(p.b) % alignment:
        p.u8(0)
    for (name, dims, qt, raw), off in zip(tensors, offsets):
        p.b += raw
        while len(p.b) % alignment:
            p.u8(0)
    return bytes(p.b)


def describe(path: Path, kvs: list, version: int, alignment: int) -> dict:
    """The expected content, checked against gguf-py's reader."""
    r = gguf.GGUFReader(str(path))
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert keys == [k[0] for k in kvs], (keys, [k[0] for k in kvs])
    for key, vt, v, *sub in kvs:
        f = r.fields[key]
        assert f.types[0] == vt, key
        if vt != VT.ARRAY or sub[0][0] != VT.ARRAY:
            got = f.contents()
            if vt == VT.FLOAT32:
                assert np.float32(got) == np.float32(v), key
            elif vt == VT.ARRAY and sub[0][0] == VT.FLOAT32:
                assert list(np.float32(got)) == list(np.float32(v)), key
            else:
                assert got == v, (key, got, v)
    assert r.alignment == alignment
    return {
        "version": version, "alignment": alignment,
        "metadata": [dict(key=k[0], **enc(k[1], k[2], k[3] if len(k) > 3 else None)) for k in kvs],
        "tensors": [{"name": t.name, "dims": [int(x) for x in t.shape], "type": t.tensor_type.name,
                     "offset": int(t.data_offset), "bytes": int(t.n_bytes)} for t in r.tensors],
    }


def metadata_kvs(alignment: int, with_empty: bool) -> list:
    kvs = [("general.architecture", VT.STRING, "llama", None), ("general.alignment", VT.UINT32, alignment, None)]
    kvs += [(k, vt, v, None) for k, vt, v in SCALARS]
    kvs += [(k, VT.ARRAY, v, sub) for k, sub, v in ARRAYS + (EMPTY_ARRAYS if with_empty else [])]
    return kvs


def metadata_tensors(rng) -> list:
    a = rng.standard_normal((3, 5)).astype(np.float32)
    b = random_finite_f16(rng, 7).view(np.uint8)
    q = np.ascontiguousarray(gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), QT.Q8_0))
    return [("a", [5, 3], QT.F32, a.tobytes()), ("b", [7], QT.F16, b.tobytes()), ("q", [64, 2], QT.Q8_0, q.tobytes())]


def make_metadata(rng) -> None:
    d = OUT / "metadata"
    d.mkdir(parents=True)
    tensors = metadata_tensors(rng)
    # v3 with gguf-py's writer (no empty arrays: it refuses them).
    kvs = metadata_kvs(64, with_empty=False)
    w = gguf.GGUFWriter(str(d / "v3.gguf"), arch=None)
    for key, vt, v, sub in kvs:
        if key == "general.alignment":
            w.add_custom_alignment(v)
        elif vt == VT.ARRAY:
            w.add_key_value(key, v, vt, sub_type=sub[0])
        else:
            w.add_key_value(key, v, vt)
    for name, dims, qt, raw in tensors:
        shape = list(reversed(dims))
        arr = np.frombuffer(raw, dtype=np.uint8).reshape(shape[0], -1) if qt == QT.Q8_0 else \
            np.frombuffer(raw, dtype=np.float32 if qt == QT.F32 else np.float16).reshape(shape)
        w.add_tensor(name, arr, raw_dtype=qt if qt == QT.Q8_0 else None)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    # gguf-py writes general.alignment where add_custom_alignment was called: same order as kvs.
    (d / "v3.json").write_text(json.dumps(describe(d / "v3.gguf", kvs, 3, 64), indent=1, ensure_ascii=False) + "\n")

    kvs2 = metadata_kvs(8, with_empty=True)
    (d / "v2.gguf").write_bytes(pack_gguf(2, kvs2, tensors, alignment=8))
    (d / "v2.json").write_text(json.dumps(describe(d / "v2.gguf", kvs2, 2, 8), indent=1, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# (d) corrupt files

def make_corrupt(rng) -> None:
    d = OUT / "corrupt"
    d.mkdir(parents=True)
    f32 = rng.standard_normal(8).astype(np.float32).tobytes()
    base_kvs = [("general.architecture", VT.STRING, "llama", None), ("x.list", VT.ARRAY, [1, 2, 3], [VT.INT32])]
    base_tensors = [("a", [8], QT.F32, f32), ("b", [8], QT.F32, f32)]
    valid = pack_gguf(3, base_kvs, base_tensors)
    cases = []

    def add(name, data, words, stage="open", tensor=None):
        (d / name).write_bytes(data)
        cases.append({"file": name, "stage": stage, "error": words, **({"tensor": tensor} if tensor else {})})

    # Offsets of fields in `valid` (little-endian header; see pack_gguf).
    p = Packer(); p.string("general.architecture")
    key0 = 24                                 # first key's length field
    val0 = key0 + len(p.b) + 4                # first value (string length field)
    arr = val0 + 8 + 5                        # "x.list" key length field
    arr_type = arr + 8 + 6 + 4                # element type of x.list
    infos = arr_type + 4 + 8 + 12             # first tensor info
    t_off = lambda i: infos + i * (8 + 1 + 4 + 8 + 4 + 8) + 8 + 1 + 4 + 8 + 4  # offset field of tensor i

    def patch(data, at, fmt, v):
        b = bytearray(data); struct.pack_into(fmt, b, at, v); return bytes(b)

    add("empty.gguf", b"", ["too short"])
    add("bad_magic.gguf", b"GGUX" + valid[4:], ["not a GGUF file"])
    add("big_endian.gguf", patch(valid, 4, ">I", 3), ["big-endian"])
    add("version1.gguf", patch(valid, 4, "<I", 1), ["version 1"])
    add("truncated_header.gguf", valid[:infos + 10], ["unexpected end of file"])
    add("truncated_data.gguf", valid[:-20], ["extends past the end"])
    add("tensor_count_overflow.gguf", patch(valid, 8, "<Q", 2 ** 63 + 1), ["tensor count"])
    add("key_count_huge.gguf", patch(valid, 16, "<Q", 2 ** 40), ["metadata key count"])
    add("string_length_2_60.gguf", patch(valid, val0, "<Q", 2 ** 60), ["length 1152921504606846976"])
    add("unknown_value_type.gguf", patch(valid, val0 - 4, "<I", 13), ["unknown value type 13"])
    add("unknown_array_type.gguf", patch(valid, arr_type, "<I", 99), ["unknown value type 99"])
    add("array_count_huge.gguf", patch(valid, arr_type + 4, "<Q", 2 ** 62), ["4611686018427387904", "elements"])
    add("offset_outside.gguf", patch(valid, t_off(1), "<Q", 2 ** 40), ["outside the file"])
    add("offset_past_end.gguf", patch(valid, t_off(1), "<Q", 64), ["extends past the end"])
    add("misaligned_offset.gguf", patch(valid, t_off(1), "<Q", 36), ["not a multiple of the alignment"])
    add("overlapping.gguf", patch(valid, t_off(1), "<Q", 0), ["overlap"])
    add("dims_overflow.gguf", patch(patch(valid, infos + 8 + 1, "<I", 2), infos + 8 + 1 + 4, "<Q", 2 ** 62)[:],
        ["overflow"])
    add("unknown_ggml_type.gguf", patch(valid, t_off(0) - 4, "<I", 99), ["unknown ggml type 99"])
    add("too_many_dims.gguf", patch(valid, infos + 8 + 1, "<I", 5), ["5 dimensions"])
    deep = [("general.architecture", VT.STRING, "llama", None),
            ("deep", VT.ARRAY, [[[[[[[[[[1]]]]]]]]]], [VT.ARRAY] * 9 + [VT.INT32])]
    add("nested_too_deep.gguf", pack_gguf(3, deep, base_tensors), ["nests arrays more than 8 deep"])
    add("bad_alignment.gguf", pack_gguf(3, base_kvs + [("general.alignment", VT.UINT32, 48, None)], base_tensors),
        ["general.alignment 48", "power of two"])
    add("alignment_type.gguf", pack_gguf(3, base_kvs + [("general.alignment", VT.UINT64, 64, None)], base_tensors),
        ["general.alignment must be a UINT32"])
    add("duplicate_key.gguf", pack_gguf(3, base_kvs + [base_kvs[1]], base_tensors), ["'x.list' appears twice"])
    add("duplicate_tensor.gguf", pack_gguf(3, base_kvs, [base_tensors[0], base_tensors[0]]), ["'a' appears twice"])
    add("block_size.gguf", pack_gguf(3, base_kvs, [("q", [16], QT.Q8_0, bytes(17))]), ["not a multiple of its block size 32"])
    # Valid headers whose tensor swift-dpo refuses to dequantize (named with its type).
    add("iq2_xxs.gguf", pack_gguf(3, base_kvs, [("w", [256], QT.IQ2_XXS, bytes(66))]), ["'w'", "IQ2_XXS"], stage="read", tensor="w")
    add("tq1_0.gguf", pack_gguf(3, base_kvs, [("w", [256], QT.TQ1_0, bytes(54))]), ["'w'", "TQ1_0"], stage="read", tensor="w")
    # Valid files that are not a model swift-dpo can load.
    add("arch_gpt2.gguf", pack_gguf(3, [("general.architecture", VT.STRING, "gpt2", None)], base_tensors),
        ["architecture 'gpt2'"], stage="load")
    add("no_tensors_model.gguf", pack_gguf(3, [("general.architecture", VT.STRING, "llama", None),
                                               ("llama.block_count", VT.UINT32, 1, None)], []),
        ["llama.embedding_length"], stage="load")
    (d / "expected.json").write_text(json.dumps(cases, indent=1) + "\n")
    lines = ["# Corrupt and refused GGUF files (generated by tools/make_gguf_fixtures.py)", "",
             "Each file must give an error (never a crash) whose message contains the file's path and the listed",
             "substrings. `stage`: `open` = `GGUFFile.open` fails; `read` = the file opens but reading tensor",
             "`tensor` as floats fails; `load` = the file opens but loading it as a model fails.",
             "`expected.json` holds the same table.", "", "| file | stage | error contains |", "|---|---|---|"]
    lines += [f"| {c['file']} | {c['stage']} | {' / '.join('`' + w + '`' for w in c['error'])} |" for c in cases]
    (d / "README.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# (c) tiny models written as llama.cpp's converter writes them, scored by transformers

def llama_permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute (rows of each head interleaved)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


GGUF_NAMES = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
              "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight": return "token_embd.weight"
    if hf == "model.norm.weight": return "output_norm.weight"
    if hf == "lm_head.weight": return "output.weight"
    parts = hf.split(".")
    rest = ".".join(parts[3:])
    for k, v in GGUF_NAMES.items():
        if rest.startswith(k):
            return f"blk.{parts[2]}." + v + rest[len(k):]
    raise KeyError(hf)


def write_model_gguf(path: Path, model, arch: str, q8: bool) -> None:
    import torch
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(path.stem)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8 else gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(cfg.vocab_size)
    if arch == "llama":
        w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_bos_token_id(1); w.add_eos_token_id(2)
    for hf, t in model.state_dict().items():
        if hf == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = t.detach().to(torch.float32).numpy()
        if arch == "llama" and ".q_proj." in hf:
            data = llama_permute(data, cfg.num_attention_heads, cfg.num_attention_heads)
        if arch == "llama" and ".k_proj." in hf:
            data = llama_permute(data, cfg.num_attention_heads, cfg.num_key_value_heads)
        data = np.ascontiguousarray(data)
        if q8 and data.ndim == 2:
            w.add_tensor(gguf_name(hf), np.ascontiguousarray(gguf.quants.quantize(data, QT.Q8_0)), raw_dtype=QT.Q8_0)
        else:
            w.add_tensor(gguf_name(hf), data)
    if q8:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def token_logps(model, ids: list[int]) -> list[float]:
    import torch
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].to(torch.float64)
    lp = torch.log_softmax(logits, dim=-1)
    return [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))]


def greedy(model, prompt: list[int], n: int) -> list[int]:
    import torch
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return [int(x) for x in out[0, len(prompt):]]


def make_models() -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    torch.set_num_threads(1)
    d = OUT / "models"
    d.mkdir(parents=True)
    specs = [
        ("llama_gqa_untied", "llama", False, 11),
        ("llama_gqa_q8", "llama", True, 11),
        ("qwen2_tied_bias", "qwen2", False, 12),
    ]
    for name, arch, q8, seed in specs:
        torch.manual_seed(seed)
        common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rms_norm_eps=1e-5, initializer_range=0.2, bos_token_id=1, eos_token_id=2)
        if arch == "llama":
            hf = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False, rope_theta=10000.0))
        else:
            hf = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True, rope_theta=100000.0))
        with torch.no_grad():
            for pn, p in hf.named_parameters():
                if p.ndim == 1:
                    p.copy_((1.0 if "norm" in pn else 0.0) + 0.1 * torch.randn_like(p))
        hf = hf.float().eval()
        path = d / f"{name}.gguf"
        write_model_gguf(path, hf, arch, q8)
        loaded = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=path.name, dtype=torch.float32).eval()
        assert loaded.config.tie_word_embeddings == (arch == "qwen2"), name
        if not q8:  # transformers' un-permutation gives back the original weights exactly
            for k, v in hf.state_dict().items():
                assert torch.equal(loaded.state_dict()[k], v), (name, k)
        g = torch.Generator().manual_seed(seed + 100)
        seqs = [torch.randint(0, 64, (n,), generator=g).tolist() for n in (9, 5, 17)]
        record = {"sequences": seqs, "logps": [token_logps(loaded, s) for s in seqs],
                  "greedy_prompts": [s[:4] for s in seqs], "greedy": [greedy(loaded, s[:4], 8) for s in seqs]}
        (d / f"{name}.json").write_text(json.dumps(record) + "\n")


def make_smollm2() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if not SMOL.exists():
        print(f"skipping smollm2.json: {SMOL} is absent")
        return
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(SMOL.parent), gguf_file=SMOL.name)
    model = AutoModelForCausalLM.from_pretrained(str(SMOL.parent), gguf_file=SMOL.name, dtype=torch.float32).eval()
    pairs = [
        ("What is the capital of France?", "The capital of France is Paris."),
        ("What is the capital of France?", "I think it might be Berlin, but I am not sure."),
        ("Write a haiku about the sea.", "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time."),
        ("Write a haiku about the sea.", "The sea is big."),
        ("How many legs does a spider have?", "A spider has eight legs."),
        ("How many legs does a spider have?", "Spiders have six legs, like insects."),
        ("Translate 'good morning' into Spanish.", "Buenos días."),
        ("Give me one tip for better sleep.", "Keep a regular schedule: go to bed and wake up at the same time every day, even on weekends."),
    ]
    items = []
    for q, a in pairs:
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
            prompt = prompt["input_ids"]
        prompt = [int(x) for x in prompt]
        completion = tok.encode(a, add_special_tokens=False) + tok.encode("<|im_end|>", add_special_tokens=False)
        lps = token_logps(model, prompt + completion)
        items.append({"prompt_ids": prompt, "completion_ids": completion,
                      "logp": sum(lps[len(prompt) - 1:]), "text": [q, a]})
    gens = []
    for q in ["Hello! Who are you?", "List three colors.", "What is 12 times 7?", "Tell me a fun fact about cats."]:
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
            prompt = prompt["input_ids"]
        prompt = [int(x) for x in prompt]
        gens.append({"prompt_ids": prompt, "tokens": greedy(model, prompt, 16), "text": q})
    (OUT / "smollm2.json").write_text(json.dumps({"pairs": items, "greedy": gens}, ensure_ascii=False, indent=1) + "\n")


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    make_quants(np.random.default_rng(1))
    make_metadata(np.random.default_rng(2))
    make_corrupt(np.random.default_rng(3))
    if "--no-models" not in sys.argv:
        make_models()
        make_smollm2()
    (OUT / "README.md").write_text(
        "# GGUF fixtures (generated by tools/make_gguf_fixtures.py; do not edit)\n\n"
        "See the script's docstring for what each file holds and how it was made.\n\n"
        "- `quants/`: one GGUF per dequantizable type + the fp32 gguf-py computes (raw little-endian f32).\n"
        "- `metadata/`: v2/v3 files with every metadata value type, nested and empty arrays, alignment 8/64 + JSON of the content.\n"
        "- `models/`: tiny llama (F32, Q8_0) and qwen2 models as llama.cpp's converter writes them + transformers' log-probs and greedy tokens.\n"
        "- `corrupt/`: one broken or refused file per failure class; `corrupt/README.md` and `expected.json` list the expected errors.\n"
        "- `smollm2.json`: transformers' summed completion log-probs and greedy tokens for SmolLM2-135M-Instruct Q4_1.\n"
        f"\nGenerated with gguf {__import__('importlib.metadata').metadata.version('gguf')}, numpy {np.__version__}"
        + (f", torch {__import__('torch').__version__}, transformers {__import__('transformers').__version__}" if "--no-models" not in sys.argv else "")
        + ".\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
