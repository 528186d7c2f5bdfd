#!/usr/bin/env python3
"""Golden fixtures of PEFT 0.21 LoRA + TRL 1.16 DPO (dev-only tool).

Base model and batch: the TRL fixtures' tiny random Llama (``Tests/DPOTests/Fixtures/trl/policy``,
vocab 64, hidden 32, 2 layers, GQA, untied) and its 4 pre-tokenized pairs (``trl/batch.json``);
``trl/ref`` is the separate reference model of the ``ref_model`` case.

What it makes, under ``Tests/DPOTests/Fixtures/lora/``
------------------------------------------------------
For each adapter case (``all_linear``: r 4, lora_alpha 8, every linear layer of the decoder;
``qv_rslora``: r 2, lora_alpha 3, q_proj + v_proj, use_rslora):

* ``<case>/adapter/``  -- ``PeftModel.save_pretrained`` output (adapter_config.json +
  adapter_model.safetensors, F32) of an adapter whose A and B are both non-zero (A as PEFT
  initialises it, B = 0.1 randn: with B = 0 the adapter would change nothing).
* ``<case>/merged.safetensors`` -- the adapted weights after ``merge_and_unload()`` (only the
  matrices the adapter changes, HF names).
* ``cases.json`` -- per adapter case, the per-pair log-prob sums of the PEFT model (``logps``: the
  completion tokens' log-probs summed, each sequence alone) and, per DPO run, every metric TRL
  logged per step.
* ``<run>.safetensors`` -- the adapter after the run (PEFT's saved key names).

DPO runs (TRL's real DPOTrainer on the PeftModel, sigmoid loss, beta 0.1, lr 1e-3, weight decay
0.01, constant schedule, max_grad_norm 0.05 so that clipping acts, batch = the 4 pairs):

* ``ref_model``     -- the ``all_linear`` adapter trained 1 step against the separate ``trl/ref``.
* ``ref_adapter``   -- the ``all_linear`` adapter trained 2 steps with no ref_model: TRL adds a
  frozen "ref" copy of the loaded adapter (dpo_trainer.py, ``model.add_adapter("ref", ...)``), so
  step 1's reference equals the policy and step 2's does not.
* ``rslora_ref_model`` -- the ``qv_rslora`` adapter, 1 step against ``trl/ref``.

The pre-tokenized dataset goes through ``PreTokenizedDPOTrainer`` of make_trl_fixtures.py (TRL 1.16
cannot take tokenized data otherwise; see that script's docstring); nothing else is replaced.

``--check DIR``: loads the adapter directory DIR (e.g. one written by swift-dpo) onto the base
model with ``PeftModel.from_pretrained`` and prints its per-pair log-prob sums beside those of
``cases.json`` for the case whose config matches.

Run from the repository root with the oracle venv (torch, transformers, trl 1.16, peft 0.21):

    /work/venv/oracle/bin/python tools/make_lora_fixtures.py
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_trl_fixtures as trlfx  # noqa: E402  (environment setup, TRL helpers)

import peft  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402

OUT = trlfx.REPO_ROOT / "Tests" / "DPOTests" / "Fixtures" / "lora"
TRL_DIR = trlfx.OUT
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTERS = {
    "all_linear": dict(r=4, lora_alpha=8, target_modules=ALL, use_rslora=False, seed=7),
    "qv_rslora": dict(r=2, lora_alpha=3, target_modules=["q_proj", "v_proj"], use_rslora=True, seed=8),
}
RUNS = {
    "ref_model": ("all_linear", "ref", 1),
    "ref_adapter": ("all_linear", None, 2),
    "rslora_ref_model": ("qv_rslora", "ref", 1),
}
METRICS = ["loss", "grad_norm", "learning_rate", "entropy", "num_tokens", "logits/chosen", "logits/rejected",
           "mean_token_accuracy", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
           "rewards/margins", "logps/chosen", "logps/rejected"]


def pairs() -> list[dict]:
    data = json.loads((TRL_DIR / "batch.json").read_text())["pairs"]
    return [{k: p["model_inputs"][k.split("_")[0]] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
            for p in data]


def lora_config(case: str) -> LoraConfig:
    a = ADAPTERS[case]
    return LoraConfig(r=a["r"], lora_alpha=a["lora_alpha"], target_modules=a["target_modules"], lora_dropout=0.0,
                      use_rslora=a["use_rslora"], bias="none", task_type="CAUSAL_LM")


def make_adapter(case: str, directory: Path) -> None:
    torch.manual_seed(ADAPTERS[case]["seed"])
    model = get_peft_model(trlfx.load(TRL_DIR / "policy"), lora_config(case))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(directory)
    (directory / "README.md").unlink()  # PEFT's model card template
    # The base's path on this machine -> the fixture's name (files stay machine-independent).
    cfg_path = directory / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "trl/policy"
    cfg["target_modules"] = sorted(cfg["target_modules"])  # a Python set: its order varies per process
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def sequence_logps(model, batch: list[dict]) -> list[list[float]]:
    """[chosen sum, rejected sum] per pair, each sequence alone, float64 log-softmax."""
    out = []
    with torch.no_grad():
        for p in batch:
            row = []
            for which in ("chosen_ids", "rejected_ids"):
                ids = p["prompt_ids"] + p[which]
                P, C = len(p["prompt_ids"]), len(p[which])
                logits = model(input_ids=torch.tensor([ids])).logits[0, P - 1: P - 1 + C].double()
                lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[P:])[:, None])
                row.append(float(lp.sum()))
            out.append(row)
    return out


def load_peft(directory: Path) -> PeftModel:
    return PeftModel.from_pretrained(trlfx.load(TRL_DIR / "policy"), directory, is_trainable=True)


def run_dpo(name: str, adapter_dir: Path, ref: str | None, steps: int, tmp: Path):
    args = trlfx.make_args(str(tmp / name), dict(loss_type=["sigmoid"], max_steps=steps, max_grad_norm=0.05))
    model = load_peft(adapter_dir)
    ref_model = trlfx.load(TRL_DIR / "ref") if ref else None
    ds = Dataset.from_list(pairs())
    cap = trlfx.Capture(False)
    trainer = trlfx.PreTokenizedDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=ds,
                                           processing_class=trlfx.make_tokenizer(), callbacks=[cap])
    trainer.remove_callback(PrinterCallback)
    if ref is None:
        assert "ref" in trainer.model.peft_config, "TRL should add a frozen 'ref' adapter"
    trainer.train()
    logs = [{m: float(lg[m]) for m in METRICS} for lg in trlfx.step_logs(cap)]
    assert len(logs) == steps, logs
    # The trained adapter by PEFT's saved names (the "default" adapter only).
    state = peft.get_peft_model_state_dict(trainer.model, adapter_name="default")
    return logs, {k: v.detach().clone().contiguous() for k, v in state.items()}


def check(directory: Path) -> None:
    cases = json.loads((OUT / "cases.json").read_text())["adapters"]
    cfg = json.loads((directory / "adapter_config.json").read_text())
    model = load_peft(directory).eval()
    got = sequence_logps(model, pairs())
    for case, a in ADAPTERS.items():
        if cfg["r"] == a["r"] and sorted(cfg["target_modules"]) == sorted(a["target_modules"]):
            want = cases[case]["logps"]
            worst = max(abs(x - y) for g, w in zip(got, want) for x, y in zip(g, w))
            print(f"{directory}: PEFT log-probs vs fixture '{case}': max |diff| {worst:.3e}")
            print(json.dumps({"peft": got, "fixture": want}))
            return
    print(f"{directory}: PEFT log-probs (no fixture case matches its config): {json.dumps(got)}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        return check(Path(sys.argv[2]))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    batch = pairs()
    result = {"versions": {"torch": torch.__version__, "peft": peft.__version__, "trl": trlfx.trl.__version__,
                           "transformers": trlfx.transformers.__version__},
              "adapters": {}, "runs": {}}
    for case in ADAPTERS:
        adir = OUT / case / "adapter"
        make_adapter(case, adir)
        model = load_peft(adir).eval()
        logps = sequence_logps(model, batch)
        with model.disable_adapter():
            base_logps = sequence_logps(model, batch)
        assert base_logps != logps
        merged = model.merge_and_unload()
        targets = ADAPTERS[case]["target_modules"]
        weights = {n: p.detach().clone().contiguous() for n, p in merged.named_parameters()
                   if any(f".{t}." in n for t in targets)}
        save_file(weights, str(OUT / case / "merged.safetensors"), metadata={"format": "pt"})
        result["adapters"][case] = {"config": {k: v for k, v in ADAPTERS[case].items() if k != "seed"},
                                    "logps": logps, "base_logps": base_logps}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (case, ref, steps) in RUNS.items():
            logs, adapter = run_dpo(name, OUT / case / "adapter", ref, steps, Path(tmp))
            save_file(adapter, str(OUT / f"{name}.safetensors"), metadata={"format": "pt"})
            result["runs"][name] = {"adapter": case, "ref_model": "trl/ref" if ref else None, "steps": steps,
                                    "max_grad_norm": 0.05, "learning_rate": 1e-3, "weight_decay": 0.01,
                                    "beta": 0.1, "metrics": logs}
    (OUT / "cases.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["runs"], indent=1))


if __name__ == "__main__":
    main()
