#!/usr/bin/env python3
"""Check swift-dpo's GGUF writer against gguf-py and transformers (dev-only tool).

1. Let the Swift test write four saves (f32, f16, bf16, q8_0) of one random model and the
   engine's per-token log-probs of three sequences (read back from each save):
       DPO_GGUF_CHECK_DIR=/tmp/gguf-check swift test -c release -Xswiftc -enable-testing \\
           --filter GGUFWriterTests/testWriteFilesForThePythonCheck
2. Run this script on that folder with the oracle venv (gguf, torch, transformers, accelerate):
       .venv-oracle/bin/python tools/check_gguf_save.py /tmp/gguf-check

It checks that gguf-py's GGUFReader reads every file; that the F16, BF16 and Q8_0 tensors are
byte-identical to gguf-py's own conversion (`numpy.astype(float16)`, `gguf.quants.quantize`) of
the F32 save's tensors; and that transformers (`from_pretrained(dir, gguf_file=...)`) computes
per-token log-probs equal to the engine's for each save. It prints the largest deviations.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as QT
from transformers import AutoModelForCausalLM


def main() -> None:
    d = Path(sys.argv[1])
    swift = json.loads((d / "swift.json").read_text())
    f32 = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(d / "f32.gguf")).tensors}
    torch.set_num_threads(1)
    for name in ["f32", "f16", "bf16", "q8_0"]:
        reader = gguf.GGUFReader(str(d / f"{name}.gguf"))
        same = 0
        for t in reader.tensors:
            raw = np.array(t.data)
            src = f32[t.name]
            if t.tensor_type == QT.F32:
                ok = np.array_equal(raw.view(np.uint32), src.view(np.uint32))
            elif t.tensor_type == QT.F16:
                ok = np.array_equal(raw.view(np.uint16), src.astype(np.float16).view(np.uint16))
            else:
                ok = np.array_equal(raw.view(np.uint8).reshape(-1), gguf.quants.quantize(src, t.tensor_type).view(np.uint8).reshape(-1))
            assert ok, (name, t.name, t.tensor_type.name)
            same += 1
        model = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=f"{name}.gguf", dtype=torch.float32).eval()
        worst = 0.0
        for ids, mine in zip(swift["sequences"], swift[f"logps_{name}"]):
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
            ref = [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))]
            worst = max(worst, max(abs(a - b) for a, b in zip(mine, ref)))
        print(f"{name}: gguf-py reads {len(reader.tensors)} tensors, {same} byte-identical to gguf-py's conversion; "
              f"transformers vs engine log-probs: max |diff| = {worst:.3g}")
        assert worst < 1e-4, name


if __name__ == "__main__":
    main()
