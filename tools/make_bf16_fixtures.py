#!/usr/bin/env python3
"""Generate the bf16 rounding fixture for swift-dpo's tests (dev-only tool).

Writes ``Tests/DPOTests/Fixtures/bf16/round.json``: float32 inputs (as bit patterns) and what
PyTorch's ``tensor.to(torch.bfloat16)`` makes of them (the bf16 bit patterns), the conversion
torch.autocast("cpu", dtype=torch.bfloat16) applies to matrix-product inputs. The inputs are the
cases that decide a rounding: exact ties between two bf16 values (even and odd kept part, both
signs), one float32 ulp either side of a tie, values rounding up into the next binade, the
largest finite float32 (rounds to infinity), the largest finite bf16, +-0, +-inf, NaN, the
smallest normal and subnormal float32 values, and random values over the whole exponent range.

swift-dpo's bf16Round (Sources/DPO/Math/BF16Gemm.swift) equals torch for every normal input,
infinities and NaN (NaN stays NaN); it flushes subnormal inputs to zero, as the AVX512-BF16
conversion instruction does, where torch keeps bf16 subnormals: the file marks those inputs.

How to run (from the repository root, with the oracle venv: torch, numpy)
    .venv-oracle/bin/python tools/make_bf16_fixtures.py
Deterministic (fixed seed).
"""

import json
import pathlib

import numpy as np
import torch


def bits(values: np.ndarray) -> list[int]:
    return [int(b) for b in values.astype(np.float32).view(np.uint32)]


def main() -> None:
    special = []
    for kept in (0x3F80, 0x3F81, 0x4049, 0x404A, 0x7F7E, 0x0080, 0x0081, 0x3F7F):
        tie = (kept << 16) | 0x8000
        special += [tie, tie - 1, tie + 1, kept << 16, (kept << 16) | 0xFFFF, (kept << 16) | 0x0001]
    special += [0x3F7FFFFF, 0x3F7F8000, 0x7F7FFFFF, 0x7F7F0000, 0x7F7F7FFF, 0x7F7F8000,
                0x00000000, 0x7F800000, 0x7FC00000, 0x7F800001, 0x00800000, 0x00000001,
                0x007FFFFF, 0x00400000, 0x0000FFFF]
    special += [b | 0x80000000 for b in special]
    rng = np.random.default_rng(15)
    random_bits = rng.integers(0, 2**32, size=256, dtype=np.uint64).astype(np.uint32)
    normals = (rng.standard_normal(256) * np.exp2(rng.integers(-20, 20, size=256))).astype(np.float32)
    inputs = np.array(special, dtype=np.uint32)
    inputs = np.concatenate([inputs, random_bits, normals.view(np.uint32)]).astype(np.uint32)
    x = torch.from_numpy(inputs.view(np.float32).copy())
    y = x.to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16)
    subnormal = [(int(b) & 0x7F800000) == 0 and (int(b) & 0x7FFFFF) != 0 for b in inputs]
    nan = [bool(v) for v in torch.isnan(x).numpy()]
    out = {
        "generator": f"tools/make_bf16_fixtures.py, torch {torch.__version__}, numpy {np.__version__}",
        "cases": [{"f32": int(i), "bf16": int(o), "subnormal": s, "nan": n}
                  for i, o, s, n in zip(inputs, y, subnormal, nan)],
    }
    path = pathlib.Path("Tests/DPOTests/Fixtures/bf16/round.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ",\n".join(json.dumps(c) for c in out["cases"])
    path.write_text(f'{{"generator": {json.dumps(out["generator"])},\n"cases": [\n{lines}\n]}}\n')
    print(f"{path}: {len(inputs)} cases, {sum(subnormal)} subnormal, {sum(nan)} NaN")


if __name__ == "__main__":
    main()
