#!/usr/bin/env python3
"""Encode throughput of HF tokenizers (Rust) on one thread, the reference for
`dpo bench-tokenizer` (Sources/dpo-cli/TokenizerBench.swift) -- dev-only.

Same measurement on both sides: the text file's non-empty lines, each encoded on its own without
special tokens, a warm-up pass (which fills the word cache and gives the token count and the same
checksum the Swift side prints), then the best of --passes timed passes. HF runs `encode_batch`
over the lines (less Python overhead per line than `encode`) pinned to one thread
(RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false, set before the import).

    cat README.md docs/*.md Sources/DPO/*/*.swift > /tmp/bench.txt
    .venv-oracle/bin/python tools/make_tokenizer_fixtures.py   # writes .cache/tokenizers/smollm2
    .venv-oracle/bin/python tools/bench_tokenizer.py --tokenizer .cache/tokenizers/smollm2 --text /tmp/bench.txt
    .build/release/dpo bench-tokenizer --tokenizer .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf --text /tmp/bench.txt
"""
import argparse
import os
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", required=True, help="a directory with tokenizer.json, or the file")
    ap.add_argument("--text", required=True)
    ap.add_argument("--passes", type=int, default=5)
    a = ap.parse_args()
    path = os.path.join(a.tokenizer, "tokenizer.json") if os.path.isdir(a.tokenizer) else a.tokenizer
    tok = Tokenizer.from_file(path)
    with open(a.text, encoding="utf-8", errors="replace") as fh:
        lines = [line for line in fh.read().split("\n") if line]
    size = sum(len(line.encode("utf-8")) for line in lines)
    count, checksum = 0, 0
    for enc in tok.encode_batch(lines, add_special_tokens=False):
        count += len(enc.ids)
        for i, t in enumerate(enc.ids):
            checksum = (checksum * 31 + t + i) & 0xFFFFFFFF
    best = float("inf")
    for _ in range(max(a.passes, 1)):
        start = time.perf_counter()
        tok.encode_batch(lines, add_special_tokens=False)
        best = min(best, time.perf_counter() - start)
    print(f"lines {len(lines)} bytes {size} tokens {count} checksum {checksum}")
    print(f"HF tokenizers encode: {best:.4f} s, {size / best / 1e6:.2f} MB/s, {count / best:.0f} tokens/s")


if __name__ == "__main__":
    main()
