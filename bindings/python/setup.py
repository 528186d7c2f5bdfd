"""Bundles libdpo.so into the wheel when it has been built, so `pip install ./bindings/python`
after `make build` gives a self-contained package (the library needs only libopenblas and libc).
Without a built library the package installs alone and finds libdpo.so at run time ($DPO_LIBRARY
or the system library path)."""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


def built_library():
    for candidate in (os.environ.get("DPO_LIBRARY"),
                      os.path.join(HERE, "..", "..", ".build", "release", "libdpo.so")):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


class BuildPy(build_py):
    def run(self):
        super().run()
        lib = built_library()
        if lib:
            shutil.copy2(lib, os.path.join(self.build_lib, "dpo", "libdpo.so"))


class BinaryDistribution(Distribution):
    """A platform wheel when it carries the native library."""

    def has_ext_modules(self):
        return built_library() is not None


setup(cmdclass={"build_py": BuildPy}, distclass=BinaryDistribution)
