"""The package names its license (Apache-2.0, the repository's LICENSE) and its source
distribution carries the LICENSE file (bindings/python/LICENSE links to the repository's)."""
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

PKG = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ROOT = os.path.dirname(os.path.dirname(PKG))


def test_repository_license_is_apache_2():
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a stub
    with open(os.path.join(PKG, "LICENSE")) as f:
        assert f.read() == text


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools")
def test_sdist_carries_the_license(tmp_path):
    src = tmp_path / "src"  # a copy, as pip builds it (the LICENSE link becomes a file)
    shutil.copytree(PKG, str(src), ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info", "build"))
    code = "from setuptools import build_meta; print(build_meta.build_sdist(%r))" % str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], cwd=str(src), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with tarfile.open(str(tmp_path / out.stdout.split()[-1])) as sdist:
        names = {n.split("/", 1)[1]: n for n in sdist.getnames() if "/" in n}
        assert "LICENSE" in names
        assert sdist.extractfile(names["LICENSE"]).read() == open(os.path.join(ROOT, "LICENSE"), "rb").read()
        info = sdist.extractfile(names["PKG-INFO"]).read().decode()
    assert "License: Apache-2.0" in info and "License-File: LICENSE" in info
