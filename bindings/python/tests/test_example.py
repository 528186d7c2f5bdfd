"""examples/train.py (the README's Python example) runs, and prints what examples/train.c prints."""
import os
import shutil
import subprocess
import sys

import pytest

import dpo

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PKG = os.path.join(ROOT, "bindings", "python")


def run_python_example(cwd):
    env = dict(os.environ, PYTHONPATH=PKG + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train.py")], cwd=str(cwd), env=env,
                          check=True, capture_output=True, text=True).stdout


def test_train_py(tmp_path):
    out = run_python_example(tmp_path)
    lines = out.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("step 20")
    assert "rewards/accuracies 1.00" in lines[-1]
    assert (tmp_path / "dpo-model" / "model.safetensors").exists()
    assert dpo.Model.from_pretrained(tmp_path / "dpo-model").config["hidden_size"] == 16


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_train_py_matches_train_c(tmp_path):
    libdir = os.path.dirname(dpo.library_path)
    exe = tmp_path / "train"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I" + os.path.join(ROOT, "include"),
                    os.path.join(ROOT, "examples", "train.c"), "-L" + libdir, "-l:" + os.path.basename(dpo.library_path),
                    "-Wl,-rpath," + libdir, "-o", str(exe)], check=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "py").mkdir()
    c_out = subprocess.run([str(exe)], cwd=str(tmp_path / "c"), check=True, capture_output=True, text=True).stdout
    assert c_out == run_python_example(tmp_path / "py")


def test_trl_workflow_py(tmp_path):
    """examples/trl_workflow.py (the README's TRL-workflow example) on the SmolLM2 GGUF."""
    gguf = os.environ.get("DPO_TEST_GGUF", os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not os.path.isfile(gguf):
        pytest.fail("%s is missing: run `make deps`" % gguf)
    env = dict(os.environ, PYTHONPATH=PKG + os.pathsep + os.environ.get("PYTHONPATH", ""), DPO_TEST_GGUF=gguf)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "trl_workflow.py")], cwd=str(tmp_path),
                         env=env, check=True, capture_output=True, text=True).stdout.splitlines()
    assert out[0] == "[1, 9690, 198, 2683, 359, 253, 5356, 5646]"   # <|im_start|>system\nYou are a ...
    assert out[-1].split()[0] == "1"                                # one optimizer step
    assert (tmp_path / "runs" / "smol" / "model.safetensors").exists()
    assert (tmp_path / "runs" / "smol" / "metrics.jsonl").exists()
