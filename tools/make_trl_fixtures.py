#!/usr/bin/env python3
"""Generate golden fixtures of what TRL 1.16's ``DPOTrainer`` computes (dev-only tool).

What it makes (all under ``Tests/DPOTests/Fixtures/trl/``)
---------------------------------------------------------
* ``policy/``, ``ref/``   -- ``LlamaForCausalLM.save_pretrained`` output (F32, eager attention):
  vocab 64, hidden 32, intermediate 64, 2 layers, 4 heads / 2 KV heads, untied, rope theta 1e4,
  rms_norm_eps 1e-5, initializer_range 0.2, pad 0 / bos 1 / eos 2. RMSNorm weights 1 + 0.1*randn.
  ``ref`` = ``policy`` with every parameter (norm weights and the zero pad row of the
  embedding included) plus 0.05*randn.
* ``batch.json``          -- the 4 preference pairs (pre-tokenized) and, per pair, the exact token
  sequences TRL fed the model (``model_inputs``), read back from the trainer's own collated batch.
* ``cases.json``          -- one entry per DPO configuration: the DPOConfig fields used, every metric
  TRL logged for the single optimizer step, and the per-pair sequence log-prob sums TRL computed;
  plus a 10-step run (``curve_linear_warmup``); plus the shared per-token forward values at the
  initial weights; plus notes on TRL behaviour (with source line references).
* ``step_<case>.safetensors`` -- policy weights after the one optimizer step (F32, HF names),
  for a subset of the cases; ``grad_<case>.safetensors`` -- the (clipped) gradient the optimizer
  consumed in that step, for a smaller subset.

How TRL is driven
-----------------
The real ``trl.DPOTrainer`` / ``DPOConfig`` run ``trainer.train()`` with ``max_steps`` (1, or 10 for
the curve) on CPU in float32; metrics are captured with a ``TrainerCallback.on_log``. Nothing of
TRL's loss / metric / optimizer code is replaced. The ONE deviation: TRL 1.16's
``DPOTrainer._prepare_dataset`` cannot take an already-tokenized dataset (it unconditionally runs
``extract_prompt``, which raises ``KeyError: 'chosen'``, dpo_trainer.py:1051-1054, even though the
comment at dpo_trainer.py:1627 says it "skips datasets that are already tokenized"). So the script
subclasses ``DPOTrainer`` and overrides only ``_prepare_dataset`` to return a dataset whose columns
are exactly ``prompt_ids``/``chosen_ids``/``rejected_ids`` unchanged (it asserts that TRL's
keep_start filter, the only other thing ``_prepare_dataset`` does to tokenized data, would keep
every pair). TRL's own ``DataCollatorForPreference`` then builds the batch. The script also runs
TRL's real ``_prepare_dataset`` on the equivalent text dataset (with a word-level tokenizer whose
word ``t<k>`` is token k) and records that it would have appended EOS (id 2) to every chosen and
rejected completion and otherwise produced the same ids.

Observation only: the models' ``forward`` (TRL's fused-LM-head forward) is wrapped to record the
per-token outputs (log-probs, entropy, mean logits, is_top1, log sum p^2) of each call, from which
the per-pair sums are re-derived with the same torch ops as TRL (they reproduce the logged means).

Checks
------
After the TRL runs, an independent implementation of docs/dpo-math.md (plain HF
forward of each sequence alone, no padding, loss math in float64, AdamW written out by hand) is
compared with every logged metric, the stored gradients and the step weights; the outcome is
printed and summarised in cases.json["contract_check"].

How to run (from the repository root)
-------------------------------------
    .venv-tools/bin/python tools/make_trl_fixtures.py
(any venv with torch, transformers==5.23.0, trl==1.16.0, datasets, accelerate, safetensors, numpy).
It deletes and rewrites Tests/DPOTests/Fixtures/trl/ except README.md (maintained by hand).
Re-running with the same versions gives byte-identical files.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import accelerate  # noqa: E402
import datasets  # noqa: E402
import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    TrainerCallback,
)
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT = REPO_ROOT / "Tests" / "DPOTests" / "Fixtures" / "trl"
POLICY_DIR = OUT / "policy"
REF_DIR = OUT / "ref"

SEED = 20240611
TRAINER_SEED = 42
PROMPT_LENS = [3, 5, 1, 4]
CHOSEN_LENS = [4, 2, 9, 6]
REJECTED_LENS = [7, 5, 3, 2]
# (pair, "chosen"/"rejected", positions) whose tokens are replaced by the policy's argmax so
# that mean_token_accuracy / is_top1 are not all zero
ARGMAX_PLANT = [(2, "chosen", [0, 2, 4, 6, 8]), (3, "chosen", [1]), (0, "rejected", [3])]
MAX_LENGTH = 64
VOCAB = 64

MODEL_CONFIG = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    rms_norm_eps=1e-5,
    initializer_range=0.2,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

# DPOConfig arguments shared by every case (TRL / transformers names).
COMMON_ARGS = dict(
    per_device_train_batch_size=4,  # = number of pairs: one batch holds all of them
    gradient_accumulation_steps=1,
    max_steps=1,
    learning_rate=1e-3,
    weight_decay=0.01,
    max_grad_norm=1.0,
    lr_scheduler_type="constant",
    warmup_steps=0,
    adam_beta1=0.9,
    adam_beta2=0.999,
    adam_epsilon=1e-8,
    beta=0.1,
    max_length=MAX_LENGTH,
    truncation_mode="keep_start",
    train_sampling_strategy="sequential",  # batch rows in dataset order (default "random" permutes them)
    disable_dropout=True,
    gradient_checkpointing=True,  # TRL's default; numerically identical to False here (checked)
    bf16=False,  # TRL defaults bf16 to True when fp16 is unset
    fp16=False,
    use_cpu=True,
    seed=TRAINER_SEED,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
    dataloader_num_workers=0,
)

# Fields written to cases.json for every case.
RECORDED_FIELDS = [
    "loss_type", "loss_weights", "beta", "label_smoothing", "f_divergence_type",
    "f_alpha_divergence_coef", "ld_alpha", "use_weighting", "discopop_tau",
    "precompute_ref_log_probs", "learning_rate", "weight_decay", "max_grad_norm",
    "lr_scheduler_type", "warmup_steps", "max_steps", "adam_beta1", "adam_beta2", "adam_epsilon",
    "optim", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
    "truncation_mode", "seed", "gradient_checkpointing", "bf16", "fp16", "use_cpu",
    "train_sampling_strategy", "disable_dropout", "sync_ref_model", "padding_free",
]

# name -> (DPOConfig overrides, ref mode, save step weights?, save gradient?)
CASES: dict[str, tuple[dict, str, bool, bool]] = {
    "sigmoid": (dict(loss_type=["sigmoid"]), "ref", True, True),
    "hinge": (dict(loss_type=["hinge"]), "ref", False, False),
    "ipo": (dict(loss_type=["ipo"]), "ref", True, False),
    "sigmoid_norm": (dict(loss_type=["sigmoid_norm"]), "ref", False, False),
    "exo_pair_ls0.1": (dict(loss_type=["exo_pair"], label_smoothing=0.1), "ref", False, False),
    "nca_pair": (dict(loss_type=["nca_pair"]), "ref", False, False),
    "robust_ls0.1": (dict(loss_type=["robust"], label_smoothing=0.1), "ref", True, False),
    "bco_pair": (dict(loss_type=["bco_pair"]), "ref", False, False),
    "sppo_hard": (dict(loss_type=["sppo_hard"]), "ref", False, False),
    "aot": (dict(loss_type=["aot"]), "ref", False, False),
    "aot_unpaired": (dict(loss_type=["aot_unpaired"]), "ref", False, False),
    "apo_zero": (dict(loss_type=["apo_zero"]), "ref", False, False),
    "apo_down": (dict(loss_type=["apo_down"]), "ref", False, False),
    "discopop": (dict(loss_type=["discopop"]), "ref", False, False),
    "sft": (dict(loss_type=["sft"]), "ref", False, False),
    "sigmoid_ls0.1": (dict(loss_type=["sigmoid"], label_smoothing=0.1), "ref", False, False),
    "sigmoid_forward_kl": (dict(loss_type=["sigmoid"], f_divergence_type="forward_kl"), "ref", False, False),
    "sigmoid_js_divergence": (dict(loss_type=["sigmoid"], f_divergence_type="js_divergence"), "ref", False, False),
    "sigmoid_alpha_divergence0.5": (
        dict(loss_type=["sigmoid"], f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.5),
        "ref", True, False),
    "hinge_forward_kl": (dict(loss_type=["hinge"], f_divergence_type="forward_kl"), "ref", False, False),
    "sigmoid_ld0.5": (dict(loss_type=["sigmoid"], ld_alpha=0.5), "ref", True, False),
    "sigmoid_wpo": (dict(loss_type=["sigmoid"], use_weighting=True), "ref", True, True),
    "rpo": (dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5]), "ref", True, True),
    "mpo": (dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]), "ref", True, False),
    "sigmoid_beta0.5": (dict(loss_type=["sigmoid"], beta=0.5), "ref", False, False),
    "ipo_beta0.5": (dict(loss_type=["ipo"], beta=0.5), "ref", False, False),
    "sigmoid_ref_none": (dict(loss_type=["sigmoid"]), "none", True, False),
    "sigmoid_precompute_ref": (dict(loss_type=["sigmoid"], precompute_ref_log_probs=True), "ref", False, False),
}
CURVE = ("curve_linear_warmup",
         dict(loss_type=["sigmoid"], lr_scheduler_type="linear", warmup_steps=3, max_steps=10))

TRL_FILE = "trl/trainer/dpo_trainer.py"


# ------------------------------------------------------------------------- models


def build_models() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    torch.manual_seed(SEED)
    config = LlamaConfig(**MODEL_CONFIG, attn_implementation="eager")
    policy = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():
        for module in policy.modules():
            if type(module).__name__ == "LlamaRMSNorm":
                module.weight.copy_(1.0 + 0.1 * torch.randn_like(module.weight))
    ref = copy.deepcopy(policy)
    with torch.no_grad():
        for _, p in ref.named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    for m in (policy, ref):
        m.eval()
        assert m.config._attn_implementation == "eager"
        assert all(p.dtype == torch.float32 for p in m.parameters())
        assert m.lm_head.weight.data_ptr() != m.model.embed_tokens.weight.data_ptr()
    return policy, ref


def load(path: Path) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")


def make_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer: word "t<k>" is token k (3 <= k < 64); <pad>=0, <s>=1, </s>=2.
    No post-processor, so it adds no BOS/EOS of its own."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, VOCAB)}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("t5 t63 t3")["input_ids"] == [5, 63, 3]
    return tok


# -------------------------------------------------------------------------- batch


def make_batch(policy: LlamaForCausalLM) -> list[dict]:
    g = torch.Generator().manual_seed(SEED + 1)
    pairs = []
    for p_len, c_len, r_len in zip(PROMPT_LENS, CHOSEN_LENS, REJECTED_LENS):
        assert p_len >= 1 and c_len != r_len and 2 <= min(c_len, r_len) and max(c_len, r_len) <= 9
        pairs.append({
            "prompt_ids": torch.randint(3, VOCAB, (p_len,), generator=g).tolist(),
            "chosen_ids": torch.randint(3, VOCAB, (c_len,), generator=g).tolist(),
            "rejected_ids": torch.randint(3, VOCAB, (r_len,), generator=g).tolist(),
        })
    with torch.no_grad():
        for i, which, positions in ARGMAX_PLANT:
            key = f"{which}_ids"
            P = len(pairs[i]["prompt_ids"])
            for j in positions:
                ids = pairs[i]["prompt_ids"] + pairs[i][key]
                logits = policy(input_ids=torch.tensor([ids[: P + j]])).logits[0, -1]
                top = int(logits.argmax())
                if top >= 3:  # keep ids clear of pad/bos/eos
                    pairs[i][key][j] = top
    for p in pairs:
        for k in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert all(3 <= t < VOCAB for t in p[k]), p
        assert len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) <= MAX_LENGTH
    return pairs


# ------------------------------------------------------------ trainer + capturing


class PreTokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer whose only change is that an already-tokenized dataset is passed through
    `_prepare_dataset` unchanged (TRL 1.16 raises KeyError 'chosen' on one, see module docstring).
    Everything else -- collator, reference handling, precompute, loss, metrics, optimizer -- is TRL's."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if set(dataset.column_names) == {"prompt_ids", "chosen_ids", "rejected_ids"}:
            # the keep_start filter is the only other step TRL applies (dpo_trainer.py:1137-1140)
            if args.max_length is not None and args.truncation_mode == "keep_start":
                assert all(len(p) < args.max_length for p in dataset["prompt_ids"])
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


PER_TOKEN_FIELDS = ("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs", "label_mask")


class ForwardRecorder:
    """Wraps a model's (TRL-patched) forward and records the fused-head outputs of every call."""

    def __init__(self, model):
        self.calls: list[dict] = []
        inner = model.forward

        def forward(*args, **kwargs):
            out = inner(*args, **kwargs)
            if kwargs.get("fused_lm_head"):
                rec = {k: (None if getattr(out, k) is None else getattr(out, k).detach().clone())
                       for k in PER_TOKEN_FIELDS}
                rec["input_ids"] = kwargs["input_ids"].detach().clone()
                rec["attention_mask"] = kwargs["attention_mask"].detach().clone()
                rec["labels"] = kwargs["labels"].detach().clone()
                self.calls.append(rec)
            return out

        model.forward = forward


class Capture(TrainerCallback):
    def __init__(self, want_grad: bool):
        self.logs: list[dict] = []
        self.want_grad = want_grad
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append({"step": state.global_step, **dict(logs)})

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        # called after clipping (transformers trainer.py:1929-1935): the gradient AdamW consumes
        if self.want_grad:
            self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})


def per_pair_sums(call: dict, ld_alpha) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-sequence sums exactly as TRL forms them (dpo_trainer.py:1296-1316)."""
    completion_mask = (call["labels"] != -100).long()
    shift = completion_mask[..., 1:]
    seq_len = shift.size(1)
    per_token = call["log_probs"][:, -seq_len:]
    if ld_alpha is None:
        logps = per_token.sum(dim=1)
    else:
        comp_pos = shift.cumsum(dim=1)
        comp_lens = shift.sum(dim=1).long()
        c_lens, r_lens = comp_lens.chunk(2, dim=0)
        shared = torch.minimum(c_lens, r_lens)
        shared = torch.cat([shared, shared], dim=0)
        shared_mask = (comp_pos > 0) & (comp_pos <= shared.unsqueeze(1))
        tail_mask = comp_pos > shared.unsqueeze(1)
        logps = (per_token * shared_mask).sum(dim=1) + ld_alpha * (per_token * tail_mask).sum(dim=1)
    return logps.chunk(2, dim=0)


def wpo_weights(call: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """dpo_trainer.py:1520-1525."""
    shift = (call["labels"] != -100).long()[..., 1:]
    seq_len = shift.size(1)
    lens = shift.sum(dim=1).clamp_min(1)
    aligned = (call["log_probs"][:, -seq_len:] - call["log_sum_sq_probs"][:, -seq_len:]) * shift
    return torch.exp(aligned.sum(dim=1) / lens).chunk(2, dim=0)


def completion_values(call: dict, field: str) -> list[list[float]]:
    """Per row, the values of `field` at the completion tokens (in order)."""
    shift = (call["labels"] != -100)[..., 1:]
    vals = call[field][:, -shift.size(1):]
    return [[float(v) for v in vals[r][shift[r]].tolist()] for r in range(vals.size(0))]


def to_floats(t: torch.Tensor) -> list[float]:
    return [float(x) for x in t.tolist()]


def make_args(output_dir: str, overrides: dict) -> DPOConfig:
    kwargs = {**COMMON_ARGS, **overrides}
    return DPOConfig(output_dir=output_dir, **kwargs)


def recorded_config(args: DPOConfig, ref_mode: str) -> dict:
    cfg = {}
    for f in RECORDED_FIELDS:
        v = getattr(args, f)
        if hasattr(v, "value"):  # enums (optim, lr_scheduler_type, ...)
            v = v.value
        cfg[f] = v
    cfg["ref_model"] = "ref/" if ref_mode == "ref" else None
    return cfg


def run_trainer(name: str, overrides: dict, ref_mode: str, want_grad: bool, pairs, tok, tmp: Path):
    args = make_args(str(tmp / name), overrides)
    policy = load(POLICY_DIR)
    ref = load(REF_DIR) if ref_mode == "ref" else None
    ds = Dataset.from_list([{k: p[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for p in pairs])
    cap = Capture(want_grad)
    trainer = PreTokenizedDPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds,
                                     processing_class=tok, callbacks=[cap])
    trainer.remove_callback(PrinterCallback)  # only prints the logs (disable_tqdm=True adds it)
    pol_rec = ForwardRecorder(trainer.model)
    ref_rec = ForwardRecorder(trainer.ref_model) if trainer.ref_model is not None else None
    precomputed = None
    if args.precompute_ref_log_probs:
        precomputed = (torch.tensor(trainer.train_dataset["ref_chosen_logps"]),
                       torch.tensor(trainer.train_dataset["ref_rejected_logps"]))
    trainer.train()
    return dict(trainer=trainer, args=args, cap=cap, pol=pol_rec, ref=ref_rec, precomputed=precomputed)


def step_logs(cap: Capture) -> list[dict]:
    """The per-step training logs (drops the end-of-training summary with runtimes)."""
    out = []
    for lg in cap.logs:
        if "train_runtime" in lg:
            continue
        assert "loss" in lg, lg
        out.append(lg)
    return out


# -------------------------------------------------------------------- contract (doc)


def ls(x):
    return F.logsigmoid(x)


def doc_sequence_stats(model, pairs, grad: bool):
    """Every sequence alone (no padding) through the plain HF forward; head math in float64."""
    out = []
    for p in pairs:
        rec = {}
        for which in ("chosen", "rejected"):
            ids = p["prompt_ids"] + p[f"{which}_ids"]
            P, C = len(p["prompt_ids"]), len(p[f"{which}_ids"])
            with torch.set_grad_enabled(grad):
                logits = model(input_ids=torch.tensor([ids])).logits[0]
                z = logits[P - 1: P - 1 + C].double()
                lsm = torch.log_softmax(z, dim=-1)
                tgt = torch.tensor(ids[P:])
                lp = lsm.gather(1, tgt[:, None])[:, 0]
            zd, lsmd = z.detach(), lsm.detach()
            rec[which] = dict(
                logp=lp, entropy=-(lsmd.exp() * lsmd).sum(-1), mean_logit=zd.mean(-1),
                hit=(zd.argmax(-1) == tgt).double(), log_sum_p2=torch.logsumexp(2 * lsmd, dim=-1),
                n=C)
        out.append(rec)
    return out


def doc_seq_logp(lp: torch.Tensor, n_other: int, ld_alpha):
    if ld_alpha is None:
        return lp.sum()
    L = min(lp.numel(), n_other)
    return lp[:L].sum() + ld_alpha * lp[L:].sum()


def doc_loss_and_metrics(pol, ref, cfg: dict, ref_logps_override=None):
    """dpo-math.md, literally. pol/ref: doc_sequence_stats outputs. Returns (loss tensor, metrics)."""
    beta, eps = cfg["beta"], cfg["label_smoothing"]
    lda = cfg["ld_alpha"]
    B = len(pol)
    lc = torch.stack([doc_seq_logp(q["chosen"]["logp"], q["rejected"]["n"], lda) for q in pol])
    lr_ = torch.stack([doc_seq_logp(q["rejected"]["logp"], q["chosen"]["n"], lda) for q in pol])
    if ref_logps_override is not None:
        rlc, rlr = ref_logps_override
    else:
        rlc = torch.stack([doc_seq_logp(q["chosen"]["logp"], q["rejected"]["n"], lda) for q in ref]).detach()
        rlr = torch.stack([doc_seq_logp(q["rejected"]["logp"], q["chosen"]["n"], lda) for q in ref]).detach()
    rc, rr = lc - rlc, lr_ - rlr
    fdt = cfg["f_divergence_type"]

    def score(r):
        if fdt == "reverse_kl":
            return r
        if fdt == "forward_kl":
            return 1 - torch.exp(-r)
        if fdt == "js_divergence":
            return math.log(2) + ls(r)
        if fdt == "alpha_divergence":
            a = cfg["f_alpha_divergence_coef"]
            if abs(a - 1) < 1e-6:
                return r
            return (torch.exp(torch.clamp((a - 1) * r, max=80.0)) - 1) / (a - 1)
        raise ValueError(fdt)

    sc, sr = score(rc), score(rr)
    D = sc - sr
    nc = torch.tensor([float(q["chosen"]["n"]) for q in pol], dtype=torch.float64)
    nr = torch.tensor([float(q["rejected"]["n"]) for q in pol], dtype=torch.float64)
    weights = cfg["loss_weights"] or [1.0] * len(cfg["loss_type"])
    if cfg["use_weighting"]:
        def w(s):
            return torch.exp(((s["logp"] - s["log_sum_p2"]).sum() / s["n"]).detach())
        wpair = torch.stack([w(q["chosen"]) * w(q["rejected"]) for q in pol])
    total = torch.zeros((), dtype=torch.float64)
    for lt, wk in zip(cfg["loss_type"], weights):
        if lt == "sigmoid":
            L = -ls(beta * D)
        elif lt == "hinge":
            L = torch.relu(1 - beta * D)
        elif lt == "ipo":
            L = (sc / nc - sr / nr - 1 / (2 * beta)) ** 2
        elif lt == "sigmoid_norm":
            L = -ls(beta * (sc / nc - sr / nr))
        elif lt == "exo_pair":
            q = torch.sigmoid(beta * D)
            L = q * (ls(beta * D) - math.log(1 - eps)) + (1 - q) * (ls(-beta * D) - math.log(eps))
        elif lt == "nca_pair":
            L = -ls(beta * sc) - 0.5 * ls(-beta * sc) - 0.5 * ls(-beta * sr)
        elif lt == "robust":
            L = (-(1 - eps) * ls(beta * D) + eps * ls(-beta * D)) / (1 - 2 * eps)
        elif lt == "bco_pair":
            L = -ls(beta * sc) - ls(-beta * sr)
        elif lt == "sppo_hard":
            L = (sc - 1 / (2 * beta)) ** 2 + (sr + 1 / (2 * beta)) ** 2
        elif lt in ("aot", "aot_unpaired"):
            if lt == "aot":
                delta = torch.sort(lc - lr_).values - torch.sort(rlc - rlr).values
            else:
                delta = torch.sort(rc).values - torch.sort(rr).values
            L = -(1 - eps) * ls(beta * delta) - eps * ls(-beta * delta)
        elif lt == "apo_zero":
            L = (1 - torch.sigmoid(beta * rc)) + torch.sigmoid(beta * rr)
        elif lt == "apo_down":
            L = torch.sigmoid(beta * rc) + (1 - torch.sigmoid(beta * (rc - rr)))
        elif lt == "discopop":
            x = beta * D
            gg = torch.sigmoid(x / cfg["discopop_tau"])
            L = (1 - gg) * (-ls(x)) + gg * torch.exp(-x)
        elif lt == "sft":
            L = -torch.cat([q["chosen"]["logp"] for q in pol]).mean().expand(B)
        else:
            raise ValueError(lt)
        if cfg["use_weighting"]:
            L = L * wpair
        total = total + wk * L.mean()
    allc = {k: torch.cat([q["chosen"][k] for q in pol]) for k in ("entropy", "mean_logit", "hit")}
    allr = {k: torch.cat([q["rejected"][k] for q in pol]) for k in ("entropy", "mean_logit")}
    metrics = {
        "loss": total.item(),
        "rewards/chosen": (beta * rc).mean().item(),
        "rewards/rejected": (beta * rr).mean().item(),
        "rewards/accuracies": ((beta * rc) > (beta * rr)).double().mean().item(),
        "rewards/margins": (beta * (rc - rr)).mean().item(),
        "logps/chosen": lc.mean().item(),
        "logps/rejected": lr_.mean().item(),
        "logits/chosen": allc["mean_logit"].mean().item(),
        "logits/rejected": allr["mean_logit"].mean().item(),
        "entropy": torch.cat([allc["entropy"], allr["entropy"]]).mean().item(),
        "mean_token_accuracy": allc["hit"].mean().item(),
    }
    return total, metrics


def doc_lr(step0: int, cfg: dict) -> float:
    """Learning rate of optimizer step `step0` (0-based), dpo-math.md 'Schedules'."""
    lr, W, T = cfg["learning_rate"], cfg["warmup_steps"], cfg["max_steps"]
    if step0 < W:
        return lr * step0 / max(1, W)
    if cfg["lr_scheduler_type"] == "constant":
        return lr
    assert cfg["lr_scheduler_type"] == "linear"
    return lr * max(0.0, (T - step0) / max(1, T - W))


def no_decay_names(model) -> set[str]:
    # transformers' grouping (Trainer.get_decay_parameter_names): bias / *norm* parameters get weight_decay 0
    return {n for n, _ in model.named_parameters() if "norm" in n or n.endswith(".bias")}


def doc_train(pairs, cfg: dict, ref_mode: str, steps: int, decay_all: bool):
    """dpo-math.md training loop (float32 model, float64 head math, hand-written clip + AdamW)."""
    model = load(POLICY_DIR)
    model.train()
    refm = load(REF_DIR if ref_mode == "ref" else POLICY_DIR).eval()
    with torch.no_grad():
        ref_stats = doc_sequence_stats(refm, pairs, grad=False)
    nd = set() if decay_all else no_decay_names(model)
    params = dict(model.named_parameters())
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    b1, b2, ae = cfg["adam_beta1"], cfg["adam_beta2"], cfg["adam_epsilon"]
    hist, grads0 = [], None
    for t in range(steps):
        model.zero_grad(set_to_none=True)
        pol = doc_sequence_stats(model, pairs, grad=True)
        loss, met = doc_loss_and_metrics(pol, ref_stats, cfg)
        loss.backward()
        g = {n: p.grad.detach().clone() for n, p in params.items()}
        gnorm = torch.sqrt(sum((x.double() ** 2).sum() for x in g.values())).item()
        coef = min(1.0, cfg["max_grad_norm"] / (gnorm + 1e-6))
        g = {n: x * coef for n, x in g.items()}
        if t == 0:
            grads0 = g
        lr = doc_lr(t, cfg)
        met.update(grad_norm=gnorm, learning_rate=lr)
        hist.append(met)
        with torch.no_grad():
            for n, p in params.items():
                wd = 0.0 if n in nd else cfg["weight_decay"]
                p.mul_(1 - lr * wd)
                m[n] = b1 * m[n] + (1 - b1) * g[n]
                v[n] = b2 * v[n] + (1 - b2) * g[n] ** 2
                mh = m[n] / (1 - b1 ** (t + 1))
                vh = v[n] / (1 - b2 ** (t + 1))
                p.sub_(lr * mh / (vh.sqrt() + ae))
    return hist, {n: p.detach().clone() for n, p in params.items()}, grads0


def rel_err(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


# --------------------------------------------------------------------------- main


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    versions = {
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "trl": trl.__version__,
        "datasets": datasets.__version__, "accelerate": accelerate.__version__,
        "safetensors": safetensors.__version__, "numpy": np.__version__,
    }
    print("versions:", versions)
    assert trl.__version__ == "1.16.0", trl.__version__

    # Output directory: keep the hand-written README.md.
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.iterdir():
        if p.name == "README.md":
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    policy, ref = build_models()
    policy.save_pretrained(POLICY_DIR)
    ref.save_pretrained(REF_DIR)
    pairs = make_batch(policy)
    tok = make_tokenizer()
    del policy, ref

    # Check that TRL 1.16 really rejects a pre-tokenized dataset (reason for the subclass).
    tmp = Path(tempfile.mkdtemp(prefix="trl_fixtures_"))
    ds_tok = Dataset.from_list([{k: p[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for p in pairs])
    try:
        DPOTrainer(model=load(POLICY_DIR), ref_model=load(REF_DIR), args=make_args(str(tmp / "x"), {}),
                   train_dataset=ds_tok, processing_class=tok)
        pretokenized_rejected = None
    except KeyError as e:
        pretokenized_rejected = f"KeyError: {e}"
    print(f"plain DPOTrainer on a pre-tokenized dataset: {pretokenized_rejected}")
    assert pretokenized_rejected is not None, "TRL now accepts pre-tokenized data: drop the subclass"

    cases_out: dict[str, dict] = {}
    shared_forward = None
    runs = {}
    for name, (overrides, ref_mode, save_step, save_grad) in CASES.items():
        r = run_trainer(name, overrides, ref_mode, save_grad, pairs, tok, tmp)
        runs[name] = r
        args, cap = r["args"], r["cap"]
        logs = step_logs(cap)
        assert len(logs) == 1 and logs[0]["step"] == 1, logs
        metrics = {k: v for k, v in logs[0].items() if k != "step"}
        assert len(r["pol"].calls) == 1, len(r["pol"].calls)
        pcall = r["pol"].calls[0]
        pc, pr = per_pair_sums(pcall, args.ld_alpha)
        if args.precompute_ref_log_probs:
            assert r["ref"] is None or len(r["ref"].calls) == 0
            rc_, rr_ = r["precomputed"]
        else:
            assert len(r["ref"].calls) == 1
            rcall = r["ref"].calls[0]
            assert torch.equal(rcall["input_ids"], pcall["input_ids"])
            rc_, rr_ = per_pair_sums(rcall, args.ld_alpha)
        # the re-derived sums reproduce TRL's logged means
        assert abs(pc.mean().item() - metrics["logps/chosen"]) <= 1e-6 * max(1, abs(pc.mean().item())), name
        assert abs(pr.mean().item() - metrics["logps/rejected"]) <= 1e-6 * max(1, abs(pr.mean().item())), name
        per_pair = {
            "policy_chosen_logps": to_floats(pc), "policy_rejected_logps": to_floats(pr),
            "ref_chosen_logps": to_floats(rc_), "ref_rejected_logps": to_floats(rr_),
        }
        if args.use_weighting:
            wc, wr = wpo_weights(pcall)
            per_pair["wpo_chosen_weight"] = to_floats(wc)
            per_pair["wpo_rejected_weight"] = to_floats(wr)
        entry = {"config": recorded_config(args, ref_mode), "metrics": metrics, "per_pair": per_pair}

        # the collated batch: rows = [chosen_0..chosen_3, rejected_0..rejected_3], right-padded with 0
        if name == "sigmoid":
            ids, am, lab = pcall["input_ids"], pcall["attention_mask"], pcall["labels"]
            B = len(pairs)
            for i, p in enumerate(pairs):
                mi = {}
                for which, row in (("chosen", i), ("rejected", B + i)):
                    n = int(am[row].sum())
                    toks = ids[row, :n].tolist()
                    assert am[row, :n].eq(1).all() and am[row, n:].eq(0).all() and ids[row, n:].eq(0).all()
                    comp = (lab[row, :n] != -100).tolist()
                    P = comp.index(True)
                    assert all(comp[P:]) and not any(comp[:P])
                    mi["prompt"] = toks[:P]
                    mi[which] = toks[P:]
                assert mi["prompt"] == p["prompt_ids"] and mi["chosen"] == p["chosen_ids"] \
                    and mi["rejected"] == p["rejected_ids"], (mi, p)
                p["model_inputs"] = mi
            pol_vals = {f: completion_values(pcall, f) for f in ("log_probs", "entropy", "mean_logits", "is_top1")}
            ref_vals = completion_values(r["ref"].calls[0], "log_probs")
            shared_forward = []
            for i in range(B):
                shared_forward.append({
                    which: {
                        "policy_logps": pol_vals["log_probs"][row],
                        "ref_logps": ref_vals[row],
                        "entropy": pol_vals["entropy"][row],
                        "mean_logits": pol_vals["mean_logits"][row],
                        "is_top1": [bool(x) for x in pol_vals["is_top1"][row]],
                    } for which, row in (("chosen", i), ("rejected", B + i))
                })
            base_call = pcall
        else:
            # every case starts from the same weights on the same batch: identical policy forward
            assert torch.equal(pcall["input_ids"], base_call["input_ids"])
            assert torch.equal(pcall["log_probs"], base_call["log_probs"]), name
        if name == "sigmoid_wpo":
            lsp = completion_values(pcall, "log_sum_sq_probs")
            for i in range(len(pairs)):
                shared_forward[i]["chosen"]["log_sum_sq_probs"] = lsp[i]
                shared_forward[i]["rejected"]["log_sum_sq_probs"] = lsp[len(pairs) + i]

        if save_step:
            w = {n: p.detach().clone().contiguous() for n, p in r["trainer"].model.named_parameters()}
            save_file(w, str(OUT / f"step_{name}.safetensors"),
                      metadata={"generator": f"tools/make_trl_fixtures.py case {name}"})
            entry["step_weights"] = f"step_{name}.safetensors"
        if save_grad:
            assert len(cap.grads) == 1
            save_file({n: g.contiguous() for n, g in cap.grads[0].items()},
                      str(OUT / f"grad_{name}.safetensors"),
                      metadata={"generator": f"tools/make_trl_fixtures.py case {name} (clipped gradient)"})
            entry["clipped_grad"] = f"grad_{name}.safetensors"
        cases_out[name] = entry
        print(f"  {name:30s} loss {metrics['loss']:.6f}  grad_norm {metrics['grad_norm']:.5f}  "
              f"margins {metrics['rewards/margins']:+.6f}  acc {metrics['rewards/accuracies']}")

    # TRL 1.16 facts the notes rely on
    for a, b in (("sigmoid", "sigmoid_ls0.1"), ("sigmoid", "sigmoid_precompute_ref")):
        assert cases_out[a]["metrics"] == cases_out[b]["metrics"], (a, b)
        assert cases_out[a]["per_pair"] == cases_out[b]["per_pair"], (a, b)
    assert cases_out["sigmoid_ref_none"]["metrics"]["loss"] == float(torch.tensor(math.log(2.0)))

    # Optimizer parameter groups actually built by the Trainer (same for every case).
    tr0 = runs["sigmoid"]["trainer"]
    names_by_id = {id(p): n for n, p in tr0.model.named_parameters()}
    opt = getattr(tr0.optimizer, "optimizer", tr0.optimizer)
    groups = [{"weight_decay": g_["weight_decay"], "params": [names_by_id[id(p)] for p in g_["params"]]}
              for g_ in opt.param_groups]
    no_decay = sorted(n for g_ in groups if g_["weight_decay"] == 0.0 for n in g_["params"])
    assert set(no_decay) == no_decay_names(tr0.model), no_decay
    optimizer_info = {
        "class": f"{type(opt).__module__}.{type(opt).__name__}",
        "defaults": {k: v for k, v in opt.defaults.items() if isinstance(v, (int, float, bool, str, type(None), tuple))},
        "no_weight_decay_params": no_decay,
    }
    print("optimizer:", optimizer_info["class"], optimizer_info["defaults"])

    # The 10-step curve.
    cname, cover = CURVE
    r = run_trainer(cname, cover, "ref", False, pairs, tok, tmp)
    logs = step_logs(r["cap"])
    assert [lg["step"] for lg in logs] == list(range(1, 11)), logs
    assert len(r["pol"].calls) == 10
    curve_steps = []
    for lg, call in zip(logs, r["pol"].calls):
        pc, pr = per_pair_sums(call, None)
        curve_steps.append({**lg, "policy_chosen_logps": to_floats(pc), "policy_rejected_logps": to_floats(pr)})
    cases_out[cname] = {"config": recorded_config(r["args"], "ref"), "steps": curve_steps}
    for s in curve_steps:
        print(f"  {cname} step {s['step']:2d}: lr {s['learning_rate']:.3e} loss {s['loss']:.6f} "
              f"grad_norm {s['grad_norm']:.5f} margins {s['rewards/margins']:+.6f}")

    # TRL's real text path on the same pairs (what a user with text data gets).
    text_ds = Dataset.from_list([{
        "prompt": " ".join(f"t{t}" for t in p["prompt_ids"]),
        "chosen": " " + " ".join(f"t{t}" for t in p["chosen_ids"]),
        "rejected": " " + " ".join(f"t{t}" for t in p["rejected_ids"]),
    } for p in pairs])
    prepared = DPOTrainer._prepare_dataset(tr0, text_ds, tok, tr0.args, "text_check")
    text_path = [{k: prepared[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for i in range(len(pairs))]
    for tp, p in zip(text_path, pairs):
        assert tp["prompt_ids"] == p["prompt_ids"]
        assert tp["chosen_ids"] == p["chosen_ids"] + [2] and tp["rejected_ids"] == p["rejected_ids"] + [2], tp
    print("text path: TRL appends EOS (2) to chosen and rejected, adds no BOS, ids otherwise unchanged")

    # Gradient checkpointing (TRL default, used above) vs off: identical numbers?
    r_nogc = run_trainer("sigmoid_nogc", dict(loss_type=["sigmoid"], gradient_checkpointing=False),
                         "ref", False, pairs, tok, tmp)
    m_nogc = {k: v for k, v in step_logs(r_nogc["cap"])[0].items() if k != "step"}
    gc_identical = m_nogc == cases_out["sigmoid"]["metrics"] and all(
        torch.equal(p, q) for p, q in zip(r_nogc["trainer"].model.parameters(),
                                          runs["sigmoid"]["trainer"].model.parameters()))
    print(f"gradient_checkpointing False gives identical metrics and step weights: {gc_identical}")

    # WPO together with 'sft' (e.g. RPO + WPO): dpo-math.md weights every loss type, TRL 1.16 raises.
    try:
        run_trainer("rpo_wpo", dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5], use_weighting=True),
                    "ref", False, pairs, tok, tmp)
        wpo_sft_error = None
    except RuntimeError as e:
        wpo_sft_error = f"RuntimeError: {e}"
    print(f"use_weighting=True with 'sft' in loss_type: {wpo_sft_error}")

    # ------------------------------------------------------------------ contract check
    print("\ncontract check: dpo-math.md implemented independently vs TRL")
    pol0 = doc_sequence_stats(load(POLICY_DIR), pairs, grad=False)
    ref0 = doc_sequence_stats(load(REF_DIR), pairs, grad=False)
    pol0_as_ref = doc_sequence_stats(load(POLICY_DIR), pairs, grad=False)
    contract = {"tolerance": "relative 2e-5 (abs below magnitude 1)", "metrics_max_rel_err": {},
                "mismatches": [], "step_weights": {}, "clipped_grads": {}}
    tol = 2e-5
    for name, entry in cases_out.items():
        if name == cname:
            continue
        cfg = entry["config"]
        _, dm = doc_loss_and_metrics(pol0, pol0_as_ref if cfg["ref_model"] is None else ref0, cfg)
        tm = entry["metrics"]
        worst = 0.0
        for k, v in dm.items():
            e = rel_err(v, tm[k])
            worst = max(worst, e)
            if e > tol:
                contract["mismatches"].append({"case": name, "metric": k, "doc": v, "trl": tm[k]})
        n_tokens = sum(len(p["prompt_ids"]) * 2 + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
        if tm["num_tokens"] != n_tokens:
            contract["mismatches"].append({"case": name, "metric": "num_tokens", "doc": n_tokens, "trl": tm["num_tokens"]})
        if tm["learning_rate"] != cfg["learning_rate"]:
            contract["mismatches"].append({"case": name, "metric": "learning_rate", "doc": cfg["learning_rate"],
                                           "trl": tm["learning_rate"]})
        contract["metrics_max_rel_err"][name] = worst
        if "step_weights" in entry or "clipped_grad" in entry:
            res = {}
            for decay_all in (True, False):
                hist, w_doc, g_doc = doc_train(pairs, cfg, "ref" if cfg["ref_model"] else "none", 1, decay_all)
                key = "decay_all_params(dpo-math.md)" if decay_all else "no_decay_for_norm_weights(transformers)"
                ge = rel_err(hist[0]["grad_norm"], tm["grad_norm"])
                if "step_weights" in entry:
                    w_trl = load_file(str(OUT / entry["step_weights"]))
                    diff = max((w_doc[n] - w_trl[n]).abs().max().item() for n in w_trl)
                    norm_diff = max((w_doc[n] - w_trl[n]).abs().max().item() for n in w_trl if "norm" in n)
                    # AdamW's first step moves an entry by ~lr * g / (|g| + adam_epsilon): where |g| is within
                    # a few orders of magnitude of adam_epsilon (1e-8) float32 noise in g changes the update.
                    big = {n: g_doc[n].abs() >= 1e-6 for n in w_trl}
                    diff_big = max(((w_doc[n] - w_trl[n]).abs() * big[n]).max().item() for n in w_trl)
                    n_small = sum(int(((g_doc[n].abs() < 1e-6) & (g_doc[n] != 0)).sum()) for n in w_trl)
                    res[key] = {"max_abs_weight_diff": diff, "max_abs_weight_diff_norm_params": norm_diff,
                                "max_abs_weight_diff_where_abs_grad_ge_1e-6": diff_big,
                                "entries_with_0<abs_grad<1e-6": n_small, "grad_norm_rel_err": ge}
                if "clipped_grad" in entry and not decay_all:
                    g_trl = load_file(str(OUT / entry["clipped_grad"]))
                    scale = max(g_trl[n].abs().max().item() for n in g_trl)
                    contract["clipped_grads"][name] = {
                        "max_abs_diff_over_max_abs_grad": max((g_doc[n] - g_trl[n]).abs().max().item()
                                                              for n in g_trl) / scale}
            contract["step_weights"][name] = res
        print(f"  {name:30s} metrics max rel err {worst:.2e}  "
              + "  ".join(f"{k}: dW {v['max_abs_weight_diff']:.2e} (|g|>=1e-6: "
                      f"{v['max_abs_weight_diff_where_abs_grad_ge_1e-6']:.2e}; norms "
                      f"{v['max_abs_weight_diff_norm_params']:.2e})"
                          for k, v in contract["step_weights"].get(name, {}).items()))
    hist, _, _ = doc_train(pairs, cases_out[cname]["config"], "ref", 10, False)
    contract["curve_max_rel_err"] = {
        k: max(rel_err(h[k], s[k]) for h, s in zip(hist, cases_out[cname]["steps"]))
        for k in ("loss", "grad_norm", "learning_rate", "rewards/margins", "rewards/accuracies", "logps/chosen")}
    print(f"  {cname}: max rel err per metric {contract['curve_max_rel_err']}")
    for mm in contract["mismatches"]:
        print("  MISMATCH", mm)
    for k, v in contract["clipped_grads"].items():
        print(f"  clipped grad {k}: max|doc - trl| / max|grad| = {v['max_abs_diff_over_max_abs_grad']:.2e}")

    # ------------------------------------------------------------------------ write
    (OUT / "batch.json").write_text(json.dumps({
        "description": "4 preference pairs; rows of TRL's collated batch are [chosen_0..3, rejected_0..3], "
                       "each prompt+completion right-padded with pad id 0 to the longest row; model_inputs = "
                       "the tokens TRL actually fed (no BOS added, no EOS appended, nothing truncated)",
        "pairs": pairs}, indent=1) + "\n")

    notes = behaviour_notes(pretokenized_rejected, optimizer_info, gc_identical, wpo_sft_error, contract)
    doc = {
        "versions": versions,
        "generator": "tools/make_trl_fixtures.py",
        "model": {"policy": "policy/", "ref": "ref/", "config": {k: v for k, v in MODEL_CONFIG.items()},
                  "attn_implementation": "eager", "dtype": "float32"},
        "batch": "batch.json",
        "optimizer": optimizer_info,
        "notes": notes,
        "forward_at_initial_weights": {
            "description": "per pair, per completion token (in order), TRL's fused-head outputs at the initial "
                           "weights (identical in every case): policy_logps, ref_logps (ref/ model), entropy, "
                           "mean_logits, is_top1, log_sum_sq_probs (policy)",
            "pairs": shared_forward},
        "cases": cases_out,
        "contract_check": contract,
    }
    (OUT / "cases.json").write_text(json.dumps(doc, indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)

    total = 0
    print()
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.relative_to(OUT)}  {p.stat().st_size}")
    print(f"total {total} bytes ({total / 1e6:.2f} MB)")
    assert total < 2_500_000


def behaviour_notes(pretokenized_rejected, optimizer_info, gc_identical, wpo_sft_error, contract) -> dict:
    f = TRL_FILE
    sw = contract["step_weights"].values()
    all_decay = max(v["decay_all_params(dpo-math.md)"]["max_abs_weight_diff_norm_params"] for v in sw)
    grouped = max(v["no_decay_for_norm_weights(transformers)"]["max_abs_weight_diff_where_abs_grad_ge_1e-6"]
                  for v in sw)
    met = max(contract["metrics_max_rel_err"].values())
    grd = max(v["max_abs_diff_over_max_abs_grad"] for v in contract["clipped_grads"].values())
    crv = max(contract["curve_max_rel_err"].values())
    n_mis = len(contract["mismatches"])
    return {
        "pre_tokenized_data": (
            f"TRL 1.16 DPOTrainer does not accept a dataset with prompt_ids/chosen_ids/rejected_ids columns: "
            f"_prepare_dataset always runs extract_prompt when there is no 'prompt' column ({f}:1051-1054) -> "
            f"{pretokenized_rejected}. The fixture uses a subclass whose only change is to return such a dataset "
            f"unchanged from _prepare_dataset; collation (DataCollatorForPreference, {f}:146-207) is TRL's. "
            f"On text data TRL appends eos_token to chosen and rejected unless already present ({f}:1056-1069) and "
            f"tokenizes prompt and prompt+completion separately, splitting at their common prefix ({f}:1097-1125); "
            f"with this fixture's word-level tokenizer that gives the same ids + [2] (checked)."),
        "collation": (
            f"rows = [prompt+chosen for each pair] + [prompt+rejected for each pair], each truncated to max_length "
            f"(keep_start) then right-padded with pad_token_id; completion_mask 1 on chosen/rejected tokens "
            f"({f}:146-207). Labels = input_ids with non-completion positions set to -100 ({f}:1298)."),
        "sequence_logps": (
            f"per-token log-probs from the fused LM head (trl/trainer/utils.py:1599-1698, "
            f"trl/kernels/chunked_logprob.py:299-383): log_softmax(z_{{t-1}})[x_t] in float32, 0 where label is "
            f"-100; summed over the row ({f}:1302-1304). LD-DPO ({f}:1305-1315, ref 1340-1346): positions "
            f"counted by cumsum of the shifted completion mask, shared = min(len_c, len_r); "
            f"logps = sum_shared + ld_alpha * sum_tail, for policy and reference (and precompute, {f}:1269-1281)."),
        "scores": (
            f"f-divergence scores {f}:1353-1381 (alpha: exp clamp max 80 in float32); non-default f-divergence "
            f"refused unless all loss types are in {{sigmoid, sigmoid_norm, hinge, ipo, exo_pair, robust, discopop, "
            f"sft}} ({f}:810-816). nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down use the raw "
            f"log-ratios ({f}:1419-1481)."),
        "loss": (
            f"loss = sum_k loss_weights[k] * mean_over_pairs(per_sequence_loss_k) ({f}:1385-1528); loss_weights "
            f"default all 1.0 ({f}:804). WPO multiplies each loss type's per-pair loss by w_c*w_r before the mean "
            f"(it would also apply to the expanded scalar sft loss, but that raises: see wpo_with_sft), w = exp(sum_completion(logp - log_sum_sq_probs)/n) without "
            f"grad ({f}:1518-1526). 'sft' = -mean of the chosen completion-token log-probs of the whole batch "
            f"(token mean, not a per-pair mean) ({f}:1495-1502). label_smoothing is used only by exo_pair, robust, "
            f"aot, aot_unpaired: sigmoid ignores it (no cDPO in TRL 1.16; case sigmoid_ls0.1 == sigmoid). "
            f"ipo / sigmoid_norm divide by the number of completion tokens of each row ({f}:1399-1402, 1505-1507)."),
        "logged_loss": (
            "the logged 'loss' is the value returned by compute_loss for the step (divided by "
            "gradient_accumulation_steps, since DPOTrainer.loss_is_scaled_for_ga = False, "
            f"{f}:494 and transformers/trainer.py:2103-2113), summed over the micro-batches and divided by the "
            "number of optimizer steps since the last log (transformers/trainer.py:2249-2254); no rounding. "
            "With logging_steps=1 and one micro-batch it is exactly the forward's loss (before the update)."),
        "metrics_averaging": (
            "each _compute_loss call appends one value per metric; DPOTrainer.log averages these lists over the "
            f"calls since the last log ({f}:1699-1708). Within a call: rewards/*, logps/* are means over pairs "
            f"({f}:1581-1601); rewards/accuracies = mean(beta*rc > beta*rr) strict ({f}:1590); rewards use the raw "
            f"(reverse-KL) log-ratios of the (LD-weighted) sums whatever the loss/f-divergence ({f}:1582-1583); "
            f"entropy, logits/*, mean_token_accuracy are token-weighted."),
        "entropy": (
            f"sum over chosen+rejected completion tokens of H_t / number of those tokens ({f}:1537-1546); "
            "H_t = logZ - sum_v e^{z_v - m} z_v / sum_v e^{z_v - m} (trl/kernels/chunked_logprob.py:378-380), i.e. "
            "-sum p log p of softmax(z_{t-1})."),
        "logits": (
            f"logits/chosen = sum over chosen completion tokens of mean_v z_{{t-1}}(v) / number of chosen completion "
            f"tokens of the batch (rejected likewise) ({f}:1555-1568); mean_v z = z_sum / vocab "
            "(trl/kernels/chunked_logprob.py:382). Division done in Python float64 after .item()."),
        "mean_token_accuracy": (
            f"fraction of chosen completion tokens whose label is the top-1 token ({f}:1570-1579); is_top1 = "
            "(z_label >= max_v z) & (z_label > max of z over ids < label), i.e. ties go to the lowest id like "
            "torch.argmax (trl/kernels/chunked_logprob.py:241-242, 383). Rejected rows are not counted."),
        "num_tokens": (
            f"cumulative sum over steps of attention_mask.sum() of the collated batch ({f}:1548-1552): prompt "
            "tokens are counted twice (once in the chosen row and once in the rejected row), plus all chosen and "
            "rejected tokens; padding not counted. Logged value after step k = k * per-batch count here."),
        "grad_norm": (
            "pre-clip global L2 norm returned by accelerator.clip_grad_norm_ -> torch.nn.utils.clip_grad_norm_ "
            "(transformers/trainer.py:1929-1932, 2773-2779), computed as the 2-norm of the per-tensor 2-norms in "
            "float32; clipping multiplies every gradient by min(1, max_grad_norm / (total_norm + 1e-6)) "
            "(torch/nn/utils/clip_grad.py:164-168)."),
        "learning_rate": (
            "the logged learning_rate is read after optimizer.step() and BEFORE lr_scheduler.step() "
            "(transformers/trainer.py:1935-1944, passed to _maybe_log_save_evaluate 2257-2260): it is the rate the "
            "logged step used. Linear warmup: lr_k = lr * k / warmup for k < warmup (so the first step uses 0), "
            "then lr * (max_steps - k) / (max_steps - warmup) (transformers/optimization.py:101-104), k = 0-based "
            "step index."),
        "optimizer": (
            f"{optimizer_info['class']} with {optimizer_info['defaults']}; default optim in transformers 5.23 with "
            "torch >= 2.8 is 'adamw_torch_fused' (transformers/training_args.py:805-814, "
            "trainer_optimizer.py:206-208). Two parameter groups (transformers/trainer.py:1272-1286): "
            "weight_decay for all parameters except those whose names match bias / layernorm / rmsnorm / "
            "(^|.)norm($|.) / _norm (transformers/trainer.py:1416-1418), which get weight_decay 0: here "
            f"{optimizer_info['no_weight_decay_params']}."),
        "reference_model": (
            f"ref_model=None (no PEFT, no precompute): TRL builds the reference by re-loading the policy from "
            f"config._name_or_path with dtype=policy dtype and the same attn_implementation "
            f"({f}:907-927) -- i.e. from the checkpoint on disk, not a copy of the in-memory policy. "
            f"precompute_ref_log_probs=True: the reference sums are computed once in __init__ with the data "
            f"collator over the dataset in order (batch size precompute_ref_batch_size or "
            f"per_device_train_batch_size) and stored as dataset columns ref_chosen_logps/ref_rejected_logps "
            f"({f}:1013-1018, 1168-1283); with ref_model=None and precompute, the policy itself (before training) is "
            f"used ({f}:909-914, 1203)."),
        "gradient_checkpointing": (
            f"TRL defaults gradient_checkpointing=True (trl/trainer/base_config.py:62-67); the fixture keeps it; "
            f"running with False gives identical metrics and step weights: {gc_identical}."),
        "bf16_default": "TRL defaults bf16=True when fp16 is unset (trl/trainer/base_config.py:107-108); the fixture sets bf16=False.",
        "sampler": ("transformers' default train_sampling_strategy='random' permutes the pairs inside the batch; "
                    "the fixture uses 'sequential' so rows are in batch.json order."),
        "gradient_accumulation": (
            "(not exercised: gradient_accumulation_steps=1) each micro-batch loss is divided by the number of "
            "micro-batches before backward (transformers/trainer.py:2103-2111) and summed into the logged loss; "
            f"every metric is the plain mean of the per-micro-batch values ({f}:1701), so token-weighted metrics "
            "(entropy, logits/*, mean_token_accuracy) are not token-weighted across micro-batches."),
        "wpo_with_sft": (
            f"use_weighting=True with 'sft' among the loss types fails in TRL 1.16: the sft loss is a scalar "
            f"expanded to a per-pair view ({f}:1502) and then multiplied in place by the weights ({f}:1526) -> "
            f"{wpo_sft_error}"),
        "dpo_math_md_differences": [
            "Weight decay: dpo-math.md applies p <- p - lr*wd*p to every parameter; transformers' Trainer (used by "
            "TRL) puts parameters whose names match bias/layernorm/rmsnorm/norm in a weight_decay=0 group "
            "(transformers/trainer.py:1272-1286, 1416-1418), i.e. here all RMSNorm weights. Checked: with decay on "
            f"all parameters the one-step weights differ from TRL's by up to {all_decay:.1e} on the norm weights; "
            f"with the transformers grouping they agree to {grouped:.1e} (entries with |grad| >= 1e-6; see "
            "contract_check.step_weights).",
            "WPO + sft: dpo-math.md multiplies every loss type (including sft) by w_c*w_r; TRL 1.16 raises a "
            f"RuntimeError for that combination ({f}:1502, 1526; see wpo_with_sft). For the other loss types "
            "the WPO formula agrees.",
            "Reference when ref_model is None: dpo-math.md says 'the policy's own initial weights (snapshot taken "
            "when training starts)'; TRL re-loads the checkpoint named by model.config._name_or_path in __init__ "
            f"({f}:915-927), so it equals the initial policy only if the in-memory policy equals its checkpoint "
            "(it fails for a model built from a config without a path).",
            "Pre-tokenized input: dpo-math.md speaks of TRL's tokenised columns prompt_ids/chosen_ids/rejected_ids; "
            f"only TRL's collator takes them, the trainer's dataset preparation rejects them ({f}:1051-1054), "
            "and TRL's text path appends EOS to both completions (see pre_tokenized_data).",
            "Clipping: the clip factor is min(1, max_grad_norm / (total_norm + 1e-6)) (torch/nn/utils/"
            "clip_grad.py:164-168), not exactly max_grad_norm / total_norm.",
            "truncation_mode='keep_end' is deprecated in TRL 1.16 (dpo_config.py:372-378) but still applied by "
            f"the collator ({f}:156-157); the keep_start prompt-too-long filter silently drops pairs "
            f"({f}:1137-1140) -- dpo-math.md already says it deviates there on purpose.",
            f"Everything else checked agrees ({n_mis} metric mismatches): all {len(contract['metrics_max_rel_err'])} "
            f"one-step cases' logged metrics match an independent implementation of dpo-math.md to <= {met:.1e} "
            f"relative, the clipped gradients to <= {grd:.1e} of the max gradient, and the 10-step linear-warmup "
            f"curve (loss, grad_norm, learning_rate, margins, accuracies, logps/chosen) to <= {crv:.1e}.",
        ],
        "pad_embedding": ("pad_token_id 0: the policy's embedding row 0 is zero (padding_idx init) and gets no "
                          "gradient; ref row 0 is perturbed. Token 0 only occurs as padding, which is after "
                          "every real token (right padding, causal attention), so it does not affect any value."),
    }


if __name__ == "__main__":
    main()
