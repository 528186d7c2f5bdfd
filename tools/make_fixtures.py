#!/usr/bin/env python3
"""Generate the reference fixtures for swift-dpo's tests (dev-only tool).

What it makes
-------------
Writes, for each of two tiny random Llama configurations, a directory
``Tests/DPOTests/Fixtures/<name>/`` (``<name>`` is ``gqa_tied`` or
``mha_untied_bias_llama3``) containing:

* ``model/``            -- ``LlamaForCausalLM.save_pretrained`` output (config.json,
                           generation_config.json, model.safetensors, F32): the
                           checkpoint swift-dpo must load.
* ``batch.json``        -- ``{"sequences": [{"prompt_ids": [...], "completion_ids": [...]}, ...],
                           "weights": [[...one per completion token...], ...]}``
                           (4 sequences, prompt lengths 5, 1, 9, 3 and completion lengths
                           7, 4, 2, 12; token ids uniform in [0, vocab), except that in
                           sequence 3 the completion tokens at even j are replaced by the
                           model's argmax so that ``argmax_hit`` is not all zeros; weights
                           uniform in [-1, 1], exactly representable as float32).
* ``expected.safetensors`` (all F32), every sequence run alone through the model
  (batch of 1, no padding, prompt + completion):
    - ``logps``       per completion token j at absolute position t = len(prompt) + j:
                      log_softmax(logits[t-1])[ids[t]], concatenated over sequences;
    - ``entropy``     -sum_v p_v log p_v of softmax(logits[t-1]);
    - ``mean_logit``  mean over the vocabulary of logits[t-1];
    - ``argmax_hit``  1.0 if argmax(logits[t-1]) == ids[t] else 0.0;
    - ``log_sum_p2``  log sum_v softmax(logits[t-1])_v^2;
    - ``grad.<param>`` d S / d param for every entry of ``model.named_parameters()``
                      (HF names), where S = sum_{seq, j} w[seq][j] * logps[seq][j].
                      With tied embeddings only ``model.embed_tokens.weight`` exists
                      and its gradient carries both the input and the output use;
    - ``greedy.<i>``  the 8 new token ids of greedy decoding from prompt i with EOS
                      stopping disabled, stored as float32 values of the ids;
    - (gqa_tied only) ``logps_bf16``: the logps of the batch computed in float32 from
                      the bfloat16 checkpoint ``model_bf16/`` (weights upcast to F32).
* (gqa_tied only) ``model_bf16/`` (the same model ``.to(torch.bfloat16)``, saved) and
  ``model_sharded/`` (the F32 model saved with a tiny ``max_shard_size``, giving
  ``model.safetensors.index.json`` + ``model-0000k-of-0000n.safetensors`` shards).

Everything is deterministic: fixed seeds, fixed lengths, single-threaded CPU torch.
After writing, the script reloads every checkpoint and expected.safetensors and
re-checks them: from_pretrained + one logp, an independent float64 numpy Llama
forward pass that only reads config.json + the safetensors files (all logps), and
central finite differences of S through that numpy forward (a few entries of every
grad.* tensor). Re-running with the same versions gives byte-identical files.

How to run (from the repository root)
-------------------------------------
    python3 -m venv .venv-tools && \\
    .venv-tools/bin/pip install torch transformers==5.23.0 safetensors numpy && \\
    .venv-tools/bin/python tools/make_fixtures.py

It deletes and rewrites ``Tests/DPOTests/Fixtures/<name>/`` for the two names above
and touches nothing else (``Tests/DPOTests/Fixtures/README.md`` is maintained by hand).

Known transformers/HF behaviours the fixtures encode (see also Fixtures/README.md)
----------------------------------------------------------------------------------
* ``nn.Embedding(padding_idx=pad_token_id)``: HF initialises the embedding row of the
  pad token to zero (so in gqa_tied, pad 0, the tied logit of token 0 is always exactly
  0) and torch gives that row *no gradient from the input lookup*. Token 0 does not
  occur among the model inputs of gqa_tied's batch (the script prints the count), so
  the stored gradients do not depend on that quirk.
* ``generate(..., eos_token_id=None)`` disables EOS stopping in transformers 5.23
  (passing a GenerationConfig with eos_token_id=None does *not*: it is merged with the
  model's generation_config). Without an explicit attention_mask, generate() infers one
  as ``input_ids != pad_token_id`` and silently masks prompt tokens equal to the pad id.
  The script checks generate() against a manual greedy loop (no KV cache).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import safetensors
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "Tests" / "DPOTests" / "Fixtures"

PROMPT_LENS = [5, 1, 9, 3]
COMPLETION_LENS = [7, 4, 2, 12]
GREEDY_NEW_TOKENS = 8
ARGMAX_SEQ = 3  # completion tokens at even j of this sequence are the model's argmax
SHARD_SIZE = "100KB"  # huggingface_hub.parse_size_to_int: "KB" = 1000 bytes

CONFIGS = {
    "gqa_tied": dict(
        seed=1234,
        config=dict(
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=128,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            rms_norm_eps=1e-5,
            max_position_embeddings=128,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
    ),
    "mha_untied_bias_llama3": dict(
        seed=5678,
        config=dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=3,
            num_key_value_heads=3,
            head_dim=24,  # q/k/v width 72 != hidden_size 48
            vocab_size=96,
            tie_word_embeddings=False,
            attention_bias=True,
            mlp_bias=True,
            # transformers 5 spelling: `rope_parameters` (the old `rope_scaling` kwarg is
            # still accepted and converted, but config.json is saved as rope_parameters).
            # original_max_position_embeddings=32 makes all three llama3 bands occur for
            # head_dim 24 / theta 5e5: wavelengths 6.28 (<32/4: high, unchanged),
            # 18.75 (in [8, 32]: medium, smoothed), >= 56 (>32: low, divided by factor).
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            rms_norm_eps=1e-6,
            max_position_embeddings=128,
            eos_token_id=[2, 3],
        ),
    ),
}


# --------------------------------------------------------------------------- build


def build_model(name: str) -> LlamaForCausalLM:
    spec = CONFIGS[name]
    torch.manual_seed(spec["seed"])
    config = LlamaConfig(
        **spec["config"],
        initializer_range=0.2,  # so that logits are far from uniform
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():
        for mod_name, module in model.named_modules():
            if type(module).__name__ == "LlamaRMSNorm":
                module.weight.copy_(1.0 + 0.1 * torch.randn_like(module.weight))
        for pname, p in model.named_parameters():
            if pname.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.eval()
    assert model.config._attn_implementation == "eager"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return model


def check_tied(model: LlamaForCausalLM, expect_tied: bool) -> None:
    emb = model.model.embed_tokens.weight
    head = model.lm_head.weight
    names = [n for n, _ in model.named_parameters()]
    if expect_tied:
        assert head is emb or head.data_ptr() == emb.data_ptr(), "lm_head is not tied"
        assert "lm_head.weight" not in names, names
        print("  tied: lm_head.weight is model.embed_tokens.weight (same storage); "
              "named_parameters() lists only model.embed_tokens.weight")
    else:
        assert head.data_ptr() != emb.data_ptr()
        assert "lm_head.weight" in names
        print("  untied: lm_head.weight is a separate parameter")


def default_inv_freq(theta: float, dim: int) -> np.ndarray:
    return 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


def llama3_inv_freq(rp: dict, dim: int) -> tuple[np.ndarray, list[str]]:
    """Independent (numpy, float64) re-implementation of the llama3 rope scaling."""
    inv = default_inv_freq(rp["rope_theta"], dim)
    factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    old = rp["original_max_position_embeddings"]
    low_wl, high_wl = old / lo, old / hi
    out, bands = [], []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(f)
            bands.append("high (unchanged)")
        elif wl > low_wl:
            out.append(f / factor)
            bands.append("low (/factor)")
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append((1 - s) * f / factor + s * f)
            bands.append(f"medium (smooth={s:.3f})")
    return np.array(out), bands


def check_rope(model: LlamaForCausalLM) -> np.ndarray:
    cfg = model.config
    rp = cfg.rope_parameters
    dim = cfg.head_dim
    hf_inv = model.model.rotary_emb.inv_freq.double().numpy()
    dflt = default_inv_freq(rp["rope_theta"], dim)
    if rp["rope_type"] == "default":
        assert np.allclose(hf_inv, dflt, rtol=1e-6), (hf_inv, dflt)
        print(f"  rope: default, theta={rp['rope_theta']}, head_dim={dim}")
        return dflt
    assert rp["rope_type"] == "llama3"
    mine, bands = llama3_inv_freq(rp, dim)
    assert np.allclose(hf_inv, mine, rtol=1e-5), (hf_inv, mine)
    print(f"  rope: llama3 active (model.model.rotary_emb.rope_type="
          f"{model.model.rotary_emb.rope_type!r}), theta={rp['rope_theta']}, head_dim={dim}")
    print("    i  wavelength   default_inv   llama3_inv    angle@pos30 default/llama3   band")
    for i, (d, m, b) in enumerate(zip(dflt, hf_inv, bands)):
        print(f"   {i:2d} {2 * math.pi / d:11.2f}  {d:.6e}  {m:.6e}   {30 * d:9.4f} / {30 * m:9.4f}   {b}")
    kinds = {b.split()[0] for b in bands}
    assert kinds == {"high", "medium", "low"}, kinds
    assert not np.allclose(hf_inv, dflt), "llama3 scaling not active"
    return hf_inv


# ---------------------------------------------------------------------- batch


def make_batch(name: str, vocab: int) -> tuple[list[dict], list[list[float]]]:
    g = torch.Generator().manual_seed(CONFIGS[name]["seed"] + 1)
    seqs, weights = [], []
    for p_len, c_len in zip(PROMPT_LENS, COMPLETION_LENS):
        p = torch.randint(0, vocab, (p_len,), generator=g).tolist()
        c = torch.randint(0, vocab, (c_len,), generator=g).tolist()
        # float32 values; converting them to Python floats is exact, and json writes the
        # shortest repr that round-trips, so Swift's Double -> Float gets the same f32.
        w = (torch.rand(c_len, generator=g, dtype=torch.float32) * 2 - 1).tolist()
        seqs.append({"prompt_ids": p, "completion_ids": c})
        weights.append(w)
    return seqs, weights


def plant_argmax_tokens(model, seq: dict) -> None:
    """Make argmax_hit non-trivial: with uniform random completions no token is ever the
    model's argmax, so in sequence ARGMAX_SEQ the completion tokens at even j are replaced
    (left to right, each with the already-patched context) by argmax(logits[t-1])."""
    ids = seq["prompt_ids"] + seq["completion_ids"]
    P = len(seq["prompt_ids"])
    with torch.no_grad():
        for j in range(0, len(seq["completion_ids"]), 2):
            logits = model(input_ids=torch.tensor([ids[: P + j]])).logits[0, -1]
            ids[P + j] = int(logits.argmax())
    seq["completion_ids"] = ids[P:]


# ---------------------------------------------------------------- computation


def per_token_stats(model, seqs, weights, want_grad: bool):
    """Runs each sequence alone; returns dict of concatenated per-token tensors (+ grads)."""
    model.zero_grad(set_to_none=True)
    cols = {k: [] for k in ("logps", "entropy", "mean_logit", "argmax_hit", "log_sum_p2")}
    margins, max_abs_logit = [], 0.0
    S = 0.0
    for seq, w in zip(seqs, weights):
        ids = seq["prompt_ids"] + seq["completion_ids"]
        P, C = len(seq["prompt_ids"]), len(seq["completion_ids"])
        x = torch.tensor([ids])
        with torch.set_grad_enabled(want_grad):
            logits = model(input_ids=x).logits[0]  # [T, V]
            rows = logits[P - 1 : P - 1 + C]  # logits[t-1] for t = P + j
            targets = torch.tensor(ids[P:])
            lsm = torch.log_softmax(rows, dim=-1)
            lp = lsm.gather(1, targets[:, None])[:, 0]
            if want_grad:
                S = S + (torch.tensor(w, dtype=lp.dtype) * lp).sum()
        lsm, rows, lp = lsm.detach(), rows.detach(), lp.detach()
        p = lsm.exp()
        cols["logps"].append(lp)
        cols["entropy"].append(-(p * lsm).sum(-1))
        cols["mean_logit"].append(rows.mean(-1))
        cols["argmax_hit"].append((rows.argmax(-1) == targets).to(rows.dtype))
        cols["log_sum_p2"].append(torch.logsumexp(2 * lsm, dim=-1))
        top2 = rows.topk(2, dim=-1).values
        margins.append((top2[:, 0] - top2[:, 1]).min().item())
        max_abs_logit = max(max_abs_logit, logits.detach().abs().max().item())
    out = {k: torch.cat(v) for k, v in cols.items()}
    grads = {}
    if want_grad:
        S.backward()
        for n, prm in model.named_parameters():
            grads[n] = prm.grad.detach().clone() if prm.grad is not None else torch.zeros_like(prm)
        model.zero_grad(set_to_none=True)
    return out, grads, dict(min_argmax_margin=min(margins), max_abs_logit=max_abs_logit)


def greedy(model, prompt: list[int]) -> tuple[list[int], float]:
    x = torch.tensor([prompt])
    with torch.no_grad():
        # eos_token_id=None disables EOS stopping (checked below against a manual loop).
        # The explicit all-ones attention_mask matters: without it generate() infers the
        # mask as input_ids != pad_token_id and would drop prompt tokens equal to the pad id.
        out = model.generate(
            x, attention_mask=torch.ones_like(x), do_sample=False,
            max_new_tokens=GREEDY_NEW_TOKENS, eos_token_id=None,
            pad_token_id=model.config.pad_token_id,
        )[0, len(prompt):].tolist()
        # Manual greedy loop, full recompute, no KV cache.
        ids, min_margin = list(prompt), float("inf")
        for _ in range(GREEDY_NEW_TOKENS):
            last = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
            top2 = last.topk(2).values
            min_margin = min(min_margin, (top2[0] - top2[1]).item())
            ids.append(int(last.argmax()))
    manual = ids[len(prompt):]
    assert out == manual, f"generate() {out} != manual greedy {manual}"
    assert len(out) == GREEDY_NEW_TOKENS
    return out, min_margin


# ------------------------------------------------------ independent numpy forward


def load_checkpoint(model_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """config.json + all safetensors weights (float64 numpy), without transformers."""
    cfg = json.loads((model_dir / "config.json").read_text())
    index = model_dir / "model.safetensors.index.json"
    shards = (sorted(set(json.loads(index.read_text())["weight_map"].values()))
              if index.exists() else ["model.safetensors"])
    W = {}
    for shard in shards:  # safetensors.torch only for reading (numpy has no bfloat16)
        W.update({k: v.double().numpy() for k, v in load_file(str(model_dir / shard)).items()})
    return cfg, W


def numpy_logits(cfg: dict, W: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Float64 Llama forward (HF semantics, written from scratch)."""
    H, nH, nKV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nH
    eps = cfg["rms_norm_eps"]
    rp = cfg["rope_parameters"]
    if rp["rope_type"] == "llama3":
        inv, _ = llama3_inv_freq(rp, hd)
    else:
        inv = default_inv_freq(rp["rope_theta"], hd)
    T = len(ids)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos = np.cos(np.concatenate([ang, ang], -1))[:, None, :]
    sin = np.sin(np.concatenate([ang, ang], -1))[:, None, :]

    def rope(t):  # t [T, heads, hd], rotate_half convention
        rot = np.concatenate([-t[..., hd // 2 :], t[..., : hd // 2]], -1)
        return t * cos + rot * sin

    def lin(x, pfx):
        y = x @ W[pfx + ".weight"].T
        return y + W[pfx + ".bias"] if pfx + ".bias" in W else y

    def rms(x, w):
        return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))

    x = W["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = rope(lin(h, p + "self_attn.q_proj").reshape(T, nH, hd))
        k = rope(lin(h, p + "self_attn.k_proj").reshape(T, nKV, hd))
        v = lin(h, p + "self_attn.v_proj").reshape(T, nKV, hd)
        heads = []
        for hh in range(nH):
            kv = hh // (nH // nKV)
            s = q[:, hh] @ k[:, kv].T / math.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            heads.append((s / s.sum(-1, keepdims=True)) @ v[:, kv])
        x = x + lin(np.concatenate(heads, -1), p + "self_attn.o_proj")
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g = lin(h, p + "mlp.gate_proj")
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = rms(x, W["model.norm.weight"])
    head = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    return x @ head.T


def numpy_logps(cfg, W, seqs) -> np.ndarray:
    out = []
    for seq in seqs:
        ids = seq["prompt_ids"] + seq["completion_ids"]
        P = len(seq["prompt_ids"])
        lg = numpy_logits(cfg, W, ids)
        lsm = lg - lg.max(-1, keepdims=True)
        lsm = lsm - np.log(np.exp(lsm).sum(-1, keepdims=True))
        out.extend(lsm[t - 1, ids[t]] for t in range(P, len(ids)))
    return np.array(out)


# ------------------------------------------------------------------------ main


def save_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def make_fixture(name: str) -> None:
    print(f"\n=== {name} ===")
    out_dir = FIXTURES / name
    save_dir(out_dir)
    model = build_model(name)
    cfg = model.config
    check_tied(model, cfg.tie_word_embeddings)
    check_rope(model)

    seqs, weights = make_batch(name, cfg.vocab_size)
    plant_argmax_tokens(model, seqs[ARGMAX_SEQ])
    (out_dir / "batch.json").write_text(json.dumps({"sequences": seqs, "weights": weights}) + "\n")
    if cfg.pad_token_id is not None:
        pad_inputs = sum(
            (s["prompt_ids"] + s["completion_ids"])[:-1].count(cfg.pad_token_id) for s in seqs
        )
        print(f"  pad_token_id={cfg.pad_token_id} occurs {pad_inputs}x among model inputs "
              f"(embedding padding_idx: no input-side gradient for that row)")

    stats, grads, diag = per_token_stats(model, seqs, weights, want_grad=True)
    expected = {k: v.contiguous() for k, v in stats.items()}
    for n, g in grads.items():
        expected[f"grad.{n}"] = g.contiguous()
    greedy_margins = []
    for i, seq in enumerate(seqs):
        toks, m = greedy(model, seq["prompt_ids"])
        greedy_margins.append(m)
        # Token ids stored as float32 values (safetensors F32, like everything else here);
        # all ids < 2^24 so the conversion is exact.
        expected[f"greedy.{i}"] = torch.tensor(toks, dtype=torch.float32)
        print(f"  greedy.{i}: prompt {seq['prompt_ids']} -> {toks}")

    print(f"  max |logit| over all positions: {diag['max_abs_logit']:.3f}")
    print(f"  mean entropy over completion tokens: {stats['entropy'].mean().item():.4f} "
          f"(uniform would be {math.log(cfg.vocab_size):.4f})")
    print(f"  argmax hits: {int(stats['argmax_hit'].sum())}/{len(stats['argmax_hit'])}, "
          f"min top1-top2 logit margin at completion positions: {diag['min_argmax_margin']:.2e}, "
          f"in greedy decoding: {min(greedy_margins):.2e}")

    model.save_pretrained(out_dir / "model")

    if name == "gqa_tied":
        mbf = copy.deepcopy(model).to(torch.bfloat16)
        mbf.save_pretrained(out_dir / "model_bf16")
        del mbf
        m_up = LlamaForCausalLM.from_pretrained(out_dir / "model_bf16", dtype=torch.float32,
                                                attn_implementation="eager").eval()
        assert all(p.dtype == torch.float32 for p in m_up.parameters())
        with torch.no_grad():  # the upcast weights are exactly the bf16-rounded f32 weights
            for (n, p), (n2, p2) in zip(model.named_parameters(), m_up.named_parameters()):
                assert n == n2 and torch.equal(p.to(torch.bfloat16).float(), p2), n
        sb, _, _ = per_token_stats(m_up, seqs, weights, want_grad=False)
        expected["logps_bf16"] = sb["logps"].contiguous()
        print(f"  bf16 weights: max|logps_bf16 - logps| = "
              f"{(sb['logps'] - stats['logps']).abs().max():.3e}")
        model.save_pretrained(out_dir / "model_sharded", max_shard_size=SHARD_SIZE)

    save_file(expected, str(out_dir / "expected.safetensors"),
              # a single metadata key: safetensors writes a multi-key metadata map in a
              # random order, which would make the file bytes differ between runs
              metadata={"generator": f"tools/make_fixtures.py (torch {torch.__version__}, "
                                     f"transformers {transformers.__version__})"})
    verify(name, model, seqs, weights, expected)


def verify(name, model, seqs, weights, expected) -> None:
    out_dir = FIXTURES / name
    exp = load_file(str(out_dir / "expected.safetensors"))
    assert set(exp) == set(expected)
    for k in exp:
        assert exp[k].dtype == torch.float32 and torch.equal(exp[k], expected[k]), k
    batch = json.loads((out_dir / "batch.json").read_text())
    assert batch["sequences"] == seqs and batch["weights"] == weights
    n_tok = sum(len(s["completion_ids"]) for s in seqs)
    assert all(exp[k].shape == (n_tok,) for k in
               ("logps", "entropy", "mean_logit", "argmax_hit", "log_sum_p2"))

    dirs = ["model"] + (["model_bf16", "model_sharded"] if name == "gqa_tied" else [])
    for d in dirs:
        mdir = out_dir / d
        files = sorted(os.listdir(mdir))
        keys = set()
        for f in files:
            if f.endswith(".safetensors"):
                with safetensors.safe_open(str(mdir / f), "pt") as fh:
                    keys |= set(fh.keys())
                    dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}
                    want = "BF16" if d == "model_bf16" else "F32"
                    assert dtypes == {want}, (d, f, dtypes)
        if model.config.tie_word_embeddings:
            assert "lm_head.weight" not in keys, f"{d}: tied checkpoint contains lm_head.weight"
        else:
            assert "lm_head.weight" in keys
        if d == "model_sharded":
            shards = [f for f in files if f.endswith(".safetensors")]
            assert "model.safetensors.index.json" in files and len(shards) >= 2, files
            wm = json.loads((mdir / "model.safetensors.index.json").read_text())["weight_map"]
            assert set(wm) == keys and set(wm.values()) == set(shards)
        print(f"  {d}/: {files}")

        m2 = LlamaForCausalLM.from_pretrained(mdir, dtype=torch.float32,
                                              attn_implementation="eager").eval()
        if model.config.tie_word_embeddings:
            assert m2.lm_head.weight.data_ptr() == m2.model.embed_tokens.weight.data_ptr()
        # Recompute logp of the first completion token of the last sequence.
        seq = seqs[-1]
        ids = seq["prompt_ids"] + seq["completion_ids"]
        P = len(seq["prompt_ids"])
        with torch.no_grad():
            lg = m2(input_ids=torch.tensor([ids])).logits[0, P - 1]
        lp = torch.log_softmax(lg, -1)[ids[P]].item()
        j = n_tok - len(seq["completion_ids"])
        ref = exp["logps_bf16" if d == "model_bf16" else "logps"][j].item()
        assert abs(lp - ref) < 1e-5, (d, lp, ref)
        # Independent numpy float64 forward from config.json + safetensors.
        np_cfg, np_W = load_checkpoint(mdir)
        npl = numpy_logps(np_cfg, np_W, seqs)
        ref_all = exp["logps_bf16" if d == "model_bf16" else "logps"].double().numpy()
        err = np.abs(npl - ref_all).max()
        assert err < 1e-3, (d, err)
        print(f"    reload ok: logp[{j}] {lp:.6f} vs expected {ref:.6f}; "
              f"numpy f64 forward max|dlogp| = {err:.2e}")
        if d == "model":
            check_grads_fd(name, np_cfg, np_W, seqs, weights, exp)


def check_grads_fd(name, cfg, W, seqs, weights, exp, per_param: int = 3) -> None:
    """Central finite differences of S = sum w*logp through the float64 numpy forward, for a
    few entries of every gradient tensor (plus embedding rows of input tokens, which in the
    tied model also carry the lm_head use). (HF's own forward is not usable for this even in
    float64: LlamaRMSNorm computes in float32, which makes finite differences noisy.)"""
    w_flat = np.concatenate([np.asarray(w, dtype=np.float64) for w in weights])

    def S() -> float:
        return float((numpy_logps(cfg, W, seqs) * w_flat).sum())

    rng = np.random.default_rng(0)
    worst, n_checked, h = 0.0, 0, 1e-4
    for key in sorted(k for k in exp if k.startswith("grad.")):
        pname = key[len("grad."):]
        if pname not in W:
            assert pname == "lm_head.weight" and cfg["tie_word_embeddings"]
        G = exp[key].double().numpy()
        idxs = [tuple(int(rng.integers(0, n)) for n in G.shape) for _ in range(per_param)]
        if pname == "model.embed_tokens.weight":
            tok = seqs[0]["prompt_ids"][1]  # an input token (its row gets both uses if tied)
            idxs += [(tok, 0), (tok, 5)]
        scale = np.abs(G).max()
        for idx in idxs:
            old = W[pname][idx]
            W[pname][idx] = old + h
            sp = S()
            W[pname][idx] = old - h
            sm = S()
            W[pname][idx] = old
            fd = (sp - sm) / (2 * h)
            rel = abs(fd - G[idx]) / scale
            worst = max(worst, rel)
            n_checked += 1
            assert rel < 1e-4, (name, pname, idx, fd, G[idx])
    print(f"    finite differences (numpy f64) vs grad.*: {n_checked} entries, "
          f"max |fd - grad| / max|grad| = {worst:.2e}")


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, safetensors {safetensors.__version__}, "
          f"numpy {np.__version__}")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name in CONFIGS:
        make_fixture(name)
    total = dir_size(FIXTURES)
    print(f"\nFixtures directory: {FIXTURES.relative_to(REPO_ROOT)}  {total} bytes "
          f"({total / 1e6:.2f} MB)")
    assert total < 5_000_000


if __name__ == "__main__":
    main()
