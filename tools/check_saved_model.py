#!/usr/bin/env python3
"""Check that model directories saved by swift-dpo load in Hugging Face transformers (dev-only tool).

What it does
------------
For each model directory (a directory holding ``config.json``), loads it with
``LlamaForCausalLM.from_pretrained`` (``Qwen2ForCausalLM`` when ``model_type`` is ``qwen2``) in
float32 with eager attention, refusing any missing, unexpected or mismatched weights, runs each
token sequence alone (batch of 1, no padding) and prints the per-token log-probabilities
``log p(ids[t] | ids[:t])`` for t >= 1.

The sequences come from a JSON file ``{"sequences": [[ids...], ...], "logps": [[...], ...]}``
(``logps`` optional). When it holds ``logps`` -- swift-dpo's own values for the same sequences --
the script compares, prints the largest absolute difference, and exits non-zero if it exceeds
the tolerance (default 1e-4).

Producing the inputs
--------------------
``ModelDirectoryTests.testExportForTransformersCheck`` writes random tiny models (tied GQA;
untied MHA with biases and llama3 RoPE; Qwen2) and their ``logps.json`` when ``DPO_EXPORT_DIR``
is set (otherwise the test is skipped):

    DPO_EXPORT_DIR=/tmp/dpo-export swift test --filter ModelDirectoryTests
    .venv-tools/bin/python tools/check_saved_model.py /tmp/dpo-export

Usage
-----
    check_saved_model.py DIR [--sequences FILE] [--tolerance 1e-4] [--quiet]

``DIR`` is one model directory, or a directory whose subdirectories are model directories (each
checked in turn). ``--sequences`` defaults to ``<model dir>/logps.json``.

Exit status: 0 all checks passed; 1 a difference above the tolerance, a weight-loading problem,
or nothing was compared; 2 bad arguments or input files.

Needs torch and transformers (developed with transformers 5.23, torch 2.15).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def fail_usage(message: str) -> None:
    print(f"check_saved_model: {message}", file=sys.stderr)
    sys.exit(2)


def model_directories(root: Path) -> list[Path]:
    if (root / "config.json").is_file():
        return [root]
    if not root.is_dir():
        fail_usage(f"{root} is not a directory")
    found = sorted(p for p in root.iterdir() if (p / "config.json").is_file())
    if not found:
        fail_usage(f"no config.json in {root} or its subdirectories")
    return found


def read_sequences(path: Path) -> tuple[list[list[int]], list[list[float]] | None]:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        fail_usage(f"cannot read {path}: {error}")
    sequences = document.get("sequences") if isinstance(document, dict) else None
    if not isinstance(sequences, list) or not all(
        isinstance(s, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in s) for s in sequences
    ):
        fail_usage(f"{path}: 'sequences' must be a list of lists of token ids")
    expected = document.get("logps")
    if expected is not None:
        if not isinstance(expected, list) or len(expected) != len(sequences):
            fail_usage(f"{path}: 'logps' must have one list per sequence")
        for i, (seq, row) in enumerate(zip(sequences, expected)):
            if not isinstance(row, list) or len(row) != max(0, len(seq) - 1):
                fail_usage(f"{path}: logps[{i}] must hold len(sequence) - 1 = {max(0, len(seq) - 1)} values")
    return sequences, expected


def load_model(directory: Path):
    import torch
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    config = json.loads((directory / "config.json").read_text())
    model_type = config.get("model_type", "llama")
    classes = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM}
    if model_type not in classes:
        raise SystemExit(f"check_saved_model: {directory}: unsupported model_type {model_type!r}")
    model, info = classes[model_type].from_pretrained(
        str(directory), dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    model.eval()
    return model, problems


def token_logps(model, sequence: list[int]) -> list[float]:
    import torch

    if len(sequence) < 2:
        return []
    ids = torch.tensor([sequence], dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    targets = ids[0, 1:]
    return logp[:-1].gather(1, targets[:, None])[:, 0].tolist()


def check(directory: Path, sequences_path: Path | None, tolerance: float, quiet: bool) -> tuple[bool, float | None]:
    path = sequences_path or directory / "logps.json"
    if not path.is_file():
        fail_usage(f"no sequences file {path}")
    sequences, expected = read_sequences(path)
    model, problems = load_model(directory)
    cfg = model.config
    print(f"== {directory} ({type(model).__name__}, vocab {cfg.vocab_size}, hidden {cfg.hidden_size}, "
          f"layers {cfg.num_hidden_layers}, heads {cfg.num_attention_heads}/{cfg.num_key_value_heads}, "
          f"tied {cfg.tie_word_embeddings}, rope {getattr(cfg, 'rope_parameters', None)})")
    ok = True
    if problems:
        print(f"   weight loading problems: {problems}")
        ok = False
    worst: float | None = None
    mismatches = 0
    for i, seq in enumerate(sequences):
        got = token_logps(model, seq)
        if not quiet:
            print(f"   seq {i} (len {len(seq)}): " + " ".join(f"{v:.6f}" for v in got))
        if expected is not None:
            for t, (a, b) in enumerate(zip(got, expected[i])):
                d = abs(a - b) if math.isfinite(a) and math.isfinite(b) else math.inf
                if worst is None or d > worst:
                    worst = d
                if d > tolerance:
                    mismatches += 1
                    if mismatches <= 10:
                        print(f"   MISMATCH seq {i} token {t + 1}: transformers {a:.8f} swift-dpo {b:.8f} (|diff| {d:.3g})")
    if mismatches > 10:
        print(f"   ... {mismatches - 10} more mismatches")
    if expected is None:
        print("   (no expected logps: printed only)")
    else:
        if worst is None:
            print("   nothing to compare (every sequence shorter than 2 tokens)")
            ok = False
        else:
            verdict = "ok" if worst <= tolerance else "FAIL"
            print(f"   max |logp(transformers) - logp(swift-dpo)| = {worst:.3g} (tolerance {tolerance:g}) {verdict}")
            ok = ok and worst <= tolerance
    return ok, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="a saved model directory, or a directory of them")
    parser.add_argument("--sequences", type=Path, default=None, help="JSON file (default: <model dir>/logps.json)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--quiet", action="store_true", help="do not print every sequence's log-probs")
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    all_ok = True
    worst_overall: float | None = None
    for directory in model_directories(args.directory):
        ok, worst = check(directory, args.sequences, args.tolerance, args.quiet)
        all_ok = all_ok and ok
        if worst is not None:
            worst_overall = worst if worst_overall is None else max(worst_overall, worst)
    if worst_overall is not None:
        print(f"overall max |diff| = {worst_overall:.3g}")
    print("PASS" if all_ok else "FAIL")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
