#!/usr/bin/env python3
"""How far PyTorch's bf16 autocast moves a DPO run from its own fp32 run (dev-only tool).

swift-dpo's `bf16=True` (issue 15) runs the matrix products with bf16 inputs and fp32 accumulation.
Its tolerance against its own fp32 run is what PyTorch's CPU autocast to bfloat16 shows against
PyTorch's fp32 on the same checkpoint and batches: this script measures that with TRL 1.16's real
DPOTrainer, `bf16=False` against `bf16=True` (accelerate then runs every forward, the policy's and
the reference's, under `torch.autocast("cpu", dtype=torch.bfloat16)`; the script checks that it
does: a linear layer's output is bf16 inside the trainer), and writes what it measured to
``Tests/DPOTests/Fixtures/bf16/autocast.json``, which BF16AutocastTests reads:

* the model: SmolLM2-135M-Instruct from the Q4_1 GGUF the tests use (`make model`), dequantized to
  fp32 by transformers' GGUF loader (swift-dpo dequantizes it to the same values);
* the batches: 16 preference pairs (questions with a right and a wrong answer, the prompt in the
  model's chat template), pre-tokenized; 4 optimizer steps of 4 pairs in order;
* DPOConfig: sigmoid loss, beta 0.1, learning_rate 1e-5 constant, AdamW without weight decay,
  max_grad_norm 1, a frozen reference (a copy of the initial policy), otherwise TRL's defaults
  (gradient checkpointing on, dropout off);
* at the initial weights (the first step): the RMS and largest difference of the per-token
  log-probs of the policy's forward (every completion token of the 4 pairs), and how far the
  directions of the first gradients differ (|g_bf16/|g_bf16| - g_fp32/|g_fp32||);
* per step, both runs' logged metrics (loss, grad_norm, rewards/*, logps/*, logits/*, entropy,
  mean_token_accuracy); after the last step, how the two runs' weights differ:
  ||W_bf16 - W_fp32|| / ||W_fp32 - W_0|| (the share of the fp32 update that bf16 changed), and
  the cosine between the two runs' updates W - W_0.

With --swift, it also runs the same steps in swift-dpo fp32 and bf16 through the Python package
(`PYTHONPATH=bindings/python`, the library from `make build` or $DPO_LIBRARY) and prints both sides
next to each other (the fixture holds PyTorch's side only; the Swift test computes swift-dpo's).

How to run (from the repository root, with the oracle venv: torch, transformers, trl, accelerate,
datasets, gguf):
    /work/venv/oracle/bin/python tools/compare_bf16_autocast.py [--swift] [--model PATH]
Takes a few minutes on 2 cores (four TRL runs' worth of steps) and about 4 GB of memory.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import accelerate  # noqa: E402
import datasets  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = REPO_ROOT / "Tests" / "DPOTests" / "Fixtures" / "bf16" / "autocast.json"

STEPS, PAIRS_PER_STEP = 4, 4
ARGS = dict(
    beta=0.1, loss_type=["sigmoid"], learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0,
    weight_decay=0.0, max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
    per_device_train_batch_size=PAIRS_PER_STEP, gradient_accumulation_steps=1, max_steps=STEPS,
    max_length=None, train_sampling_strategy="sequential", disable_dropout=True, use_cpu=True, seed=42,
    logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
)
# The metrics compared (TRL's names, as swift-dpo logs them).
METRICS = ["loss", "grad_norm", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen",
           "logps/rejected", "logits/chosen", "logits/rejected", "entropy", "mean_token_accuracy"]

# (question, right answer, wrong answer)
PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.",
     "France does not have a capital city; most people think it is Lyon."),
    ("Name a primary color.", "Red is a primary color.", "Green, purple and brown are the only primary colors."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Spiders have six legs, like all insects."),
    ("What is 12 times 3?", "12 times 3 is 36.", "12 times 3 is 15."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'.", "It is 'merci'."),
    ("Give me a tip for better sleep.",
     "Keep a regular schedule: go to bed and wake up at the same time every day, even on weekends.",
     "Drink two cups of strong coffee right before bed."),
    ("What gas do plants absorb from the air?",
     "Plants absorb carbon dioxide from the air and use it in photosynthesis.", "Plants absorb helium."),
    ("Write a haiku about rain.", "Soft rain on the roof\nwhispers to the sleeping town\npuddles hold the sky",
     "Rain rain rain rain rain."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet.",
     "Charles Dickens wrote it in 1950."),
    ("What is the boiling point of water at sea level?",
     "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level.", "Water never boils at sea level."),
    ("Suggest a name for a pet cat.", "How about Miso? It is short, friendly and easy to call.",
     "Cats cannot have names."),
    ("Explain what a noun is in one sentence.", "A noun is a word that names a person, place, thing or idea.",
     "A noun is a kind of fruit."),
    ("Is the sun a star?", "Yes, the Sun is a star: a huge ball of hot gas at the center of our solar system.",
     "No, the Sun is a planet."),
    ("What should I do if I burn my finger?",
     "Cool the burn under running water for 10 to 20 minutes and cover it loosely; see a doctor if it is severe.",
     "Put butter on it and ignore it."),
    ("How many days are in a leap year?", "A leap year has 366 days.", "A leap year has 300 days."),
    ("Recommend a way to learn a new language.",
     "Practice a little every day: use a course for vocabulary and speak with native speakers as soon as you can.",
     "Just wait and it will come to you."),
]


def tokenize_pairs(tok) -> list[dict]:
    """prompt_ids: the question as a user message in the chat template with the generation prompt;
    chosen/rejected_ids: the answer's tokens and <|im_end|> (the template's end of turn)."""
    end = tok.convert_tokens_to_ids("<|im_end|>")
    out = []
    for question, chosen, rejected in PAIRS:
        prompt = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         tokenize=True)
        if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
            prompt = prompt["input_ids"]
        out.append({"prompt_ids": list(map(int, prompt)),
                    "chosen_ids": tok.encode(chosen, add_special_tokens=False) + [end],
                    "rejected_ids": tok.encode(rejected, add_special_tokens=False) + [end]})
    return out


class PreTokenizedDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer, except that a pre-tokenized dataset passes `_prepare_dataset` unchanged
    (TRL 1.16 runs extract_prompt on it and fails; see tools/make_trl_fixtures.py)."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if set(dataset.column_names) == {"prompt_ids", "chosen_ids", "rejected_ids"}:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


class Capture(TrainerCallback):
    """The step logs, and the (clipped) gradient the first optimizer step consumes."""

    def __init__(self):
        self.logs: list[dict] = []
        self.first_gradient = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and "train_runtime" not in logs:
            self.logs.append({"step": state.global_step, **dict(logs)})

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.first_gradient is None:
            self.first_gradient = torch.cat([p.grad.detach().reshape(-1).double()
                                             for _, p in sorted(model.named_parameters())])


def record_first_logps(model) -> dict:
    """Wraps the policy's (TRL-patched) forward: the per-token log-probs of the completion tokens of
    its first call (the first step's policy forward, at the initial weights)."""
    seen, inner = {}, model.forward

    def forward(*args, **kwargs):
        out = inner(*args, **kwargs)
        if kwargs.get("fused_lm_head") and "logps" not in seen:
            seen["logps"] = out.log_probs[out.label_mask].detach().double().clone()
        return out

    model.forward = forward
    return seen


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float().clone() for _, p in sorted(model.named_parameters())])


def run_trl(base, tok, pairs, bf16: bool, tmp: Path):
    """STEPS optimizer steps of TRL's DPOTrainer; returns the step logs, the final flat weights and
    the dtype of a linear layer's output inside the trainer's forward (proof of autocast)."""
    policy = copy.deepcopy(base).train()
    ref = copy.deepcopy(base).eval().requires_grad_(False)
    args = DPOConfig(output_dir=str(tmp / ("bf16" if bf16 else "fp32")), bf16=bf16, fp16=False, **ARGS)
    cap = Capture()
    trainer = PreTokenizedDPOTrainer(model=policy, ref_model=ref, args=args, processing_class=tok,
                                     train_dataset=Dataset.from_list(pairs), callbacks=[cap])
    trainer.remove_callback(PrinterCallback)
    first = record_first_logps(trainer.model)
    seen = {}

    def record(module, inputs, output):  # returns None: the output is left as it is
        seen.setdefault("linear_output_dtype", str(output.dtype))

    hook = policy.model.layers[0].mlp.down_proj.register_forward_hook(record)
    trainer.train()
    hook.remove()
    assert len(cap.logs) == STEPS, cap.logs
    assert all(p.dtype == torch.float32 for p in policy.parameters()), "master weights must stay fp32"
    info = {"mixed_precision": str(trainer.accelerator.mixed_precision), **seen}
    return cap.logs, flat(policy), info, first["logps"], cap.first_gradient


def first_step_stats(logps32, logps16, grad32, grad16) -> dict:
    """Precision at the initial weights, before any update can amplify it: the per-token log-probs of
    the first step's policy forward and the first step's gradient (its direction: TRL's gradient is
    the clipped one, swift-dpo's the raw one)."""
    d = logps16 - logps32
    u32, u16 = grad32 / grad32.norm(), grad16 / grad16.norm()
    return {"tokens": int(d.numel()), "token_logp_rms_difference": float(d.pow(2).mean().sqrt()),
            "token_logp_max_difference": float(d.abs().max()),
            "gradient_direction_difference": float((u16 - u32).norm())}


def weight_stats(w0: torch.Tensor, w_fp32: torch.Tensor, w_bf16: torch.Tensor) -> dict:
    u32, u16 = (w_fp32 - w0).double(), (w_bf16 - w0).double()
    return {"relative_update_difference": float((u16 - u32).norm() / u32.norm()),
            "update_cosine": float((u16 @ u32) / (u16.norm() * u32.norm()))}


def run_swift(model_path: Path, pairs) -> dict:
    """The same steps in swift-dpo (Python package over libdpo), fp32 and bf16."""
    import dpo  # noqa: PLC0415 (optional: only with --swift)
    from safetensors.torch import load_file  # noqa: PLC0415

    def weights(model, d: Path) -> torch.Tensor:
        model.save_pretrained(str(d))
        t = load_file(str(d / "model.safetensors"))
        return torch.cat([t[k].reshape(-1).float() for k in sorted(t)])

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        w = {}
        for bf16 in (False, True):
            model = dpo.Model.from_pretrained(str(model_path))
            if not bf16:
                w["w0"] = weights(model, Path(tmp) / "w0")
            keys = {k: v for k, v in ARGS.items() if k in ("beta", "loss_type", "learning_rate", "lr_scheduler_type",
                                                           "weight_decay", "max_grad_norm", "seed")}
            trainer = dpo.DPOTrainer(model, ref_model=None, args=dpo.DPOConfig(bf16=bf16, max_length=None,
                                                                                 max_steps=STEPS, **keys))
            logs = [trainer.step(pairs[s * PAIRS_PER_STEP:(s + 1) * PAIRS_PER_STEP]) for s in range(STEPS)]
            result["bf16" if bf16 else "fp32"] = logs
            w["bf16" if bf16 else "fp32"] = weights(model, Path(tmp) / ("b" if bf16 else "f"))
        result["weights"] = weight_stats(w["w0"], w["fp32"], w["bf16"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--swift", action="store_true", help="also run swift-dpo (Python package) and print both")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    if not a.model.exists():
        sys.exit(f"{a.model} is missing: run `make model`")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(a.model.parent), gguf_file=a.model.name)
    gguf = AutoModelForCausalLM.from_pretrained(str(a.model.parent), gguf_file=a.model.name, dtype=torch.float32)
    # The GGUF load marks the model as quantized (transformers' Trainer refuses those): the same
    # dequantized fp32 weights in a plain model.
    config = copy.deepcopy(gguf.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._attn_implementation = "sdpa"
    base = type(gguf)(config).float()
    base.load_state_dict(gguf.state_dict())
    del gguf
    pairs = tokenize_pairs(tok)
    w0 = flat(base)
    with tempfile.TemporaryDirectory() as tmp:
        logs32, w32, info32, lp32, g32 = run_trl(base, tok, pairs, False, Path(tmp))
        logs16, w16, info16, lp16, g16 = run_trl(base, tok, pairs, True, Path(tmp))
    first = first_step_stats(lp32, lp16, g32, g16)
    del g32, g16
    assert info32["linear_output_dtype"] == "torch.float32" and info16["linear_output_dtype"] == "torch.bfloat16", \
        (info32, info16)
    steps = [{"step": s + 1, "fp32": {m: logs32[s][m] for m in METRICS}, "bf16": {m: logs16[s][m] for m in METRICS}}
             for s in range(STEPS)]
    torch_weights = weight_stats(w0, w32, w16)
    out = {
        "generator": (f"tools/compare_bf16_autocast.py: TRL {trl.__version__} DPOTrainer bf16=False vs bf16=True "
                      f"(accelerate {accelerate.__version__} autocast, linear outputs {info16['linear_output_dtype']}), "
                      f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
                      f"{transformers.__version__}, datasets {datasets.__version__}, Python {platform.python_version()}"),
        "model": a.model.name,
        "config": {k: ARGS[k] for k in ("beta", "loss_type", "learning_rate", "lr_scheduler_type", "weight_decay",
                                        "max_grad_norm", "per_device_train_batch_size", "max_steps")},
        "pairs": pairs,
        "first_step": first,
        "steps": steps,
        "weights_after_last_step": torch_weights,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    body = ",\n".join(f'"{k}": {json.dumps(v)}' for k, v in out.items())
    a.out.write_text("{" + body + "}\n")
    print(f"wrote {a.out}")

    swift = run_swift(a.model, pairs) if a.swift else None
    print(f"\n|bf16 - fp32| per step ({STEPS} steps of {PAIRS_PER_STEP} pairs)"
          + ("; torch, then swift-dpo" if swift else ""))
    for m in METRICS:
        d_t = [abs(s["bf16"][m] - s["fp32"][m]) for s in steps]
        line = f"  {m:<20} torch " + " ".join(f"{x:9.3g}" for x in d_t)
        if swift:
            d_s = [abs(swift["bf16"][i][m] - swift["fp32"][i][m]) for i in range(STEPS)]
            line += "   swift " + " ".join(f"{x:9.3g}" for x in d_s)
            line += f"   max ratio swift/torch {max(d_s) / max(max(d_t), 1e-30):.3f}"
        print(line)
    print(f"  first step (torch): {first}")
    print(f"  weights after step {STEPS}: torch {torch_weights}" + (f", swift {swift['weights']}" if swift else ""))
    if swift:
        print("\nfp32 parity, torch vs swift-dpo (step 1 logps/chosen): "
              f"{steps[0]['fp32']['logps/chosen']:.6f} vs {swift['fp32'][0]['logps/chosen']:.6f}")
        for m in ("loss", "logps/chosen", "rewards/margins"):
            print(f"  {m:<20} fp32 torch " + " ".join(f"{s['fp32'][m]:.6g}" for s in steps)
                  + "   swift " + " ".join(f"{x[m]:.6g}" for x in swift["fp32"]))


if __name__ == "__main__":
    main()
