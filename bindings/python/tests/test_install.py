"""`pip install ./bindings/python` gives a package that carries libdpo.so and works alone."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

import dpo

PKG = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def can_build_wheels():
    """pip, and setuptools able to build a wheel offline (>= 70.1, or the wheel package)."""
    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
        return False
    from importlib.metadata import version as installed
    version = tuple(int(x) for x in installed("setuptools").split(".")[:2] if x.isdigit())
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.mark.skipif(not can_build_wheels(), reason="pip/setuptools cannot build a wheel offline here")
def test_pip_install_bundles_the_library(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info", "build"))
    env = dict(os.environ, DPO_LIBRARY=dpo.library_path, PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index",
                    "--target", str(tmp_path / "site"), str(src)], check=True, env=env, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DPO_LIBRARY", "PYTHONPATH", "LD_LIBRARY_PATH")}
    env["PYTHONPATH"] = str(tmp_path / "site")
    code = ("import dpo; m = dpo.Model.from_config({'vocab_size': 8, 'hidden_size': 8, 'intermediate_size': 8, "
            "'num_hidden_layers': 1, 'num_attention_heads': 2}); print(dpo.library_path, m.num_parameters())")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    assert out[0] == str(tmp_path / "site" / "dpo" / "libdpo.so")
    assert int(out[1]) > 0
