# swift-dpo: the commands people use. `make help` lists them.
SWIFT ?= swift
CONFIG ?= release
# NATIVE=1 (default) compiles Swift for the build machine's CPU (AVX2/FMA where it has them, as
# llama.cpp's GGML_NATIVE does): the non-GEMM loops of a step run faster (tiny benchmark step:
# -6%). NATIVE=0 builds a binary that runs on any x86-64 (or aarch64) CPU.
NATIVE ?= 1
BUILDFLAGS := $(if $(filter 1,$(NATIVE)),-Xswiftc -target-cpu -Xswiftc native,)
# Tests use @testable imports, which release builds allow only with testing enabled.
TESTFLAGS := $(BUILDFLAGS) -Xswiftc -enable-testing
PYTHON ?= python3
# pytest for the Python tests: from apt (python3-pytest) unless $(PYTHON) already has it.
PYTEST_APT := $(shell $(PYTHON) -c 'import pytest' >/dev/null 2>&1 || echo python3-pytest)
# Debian packages the build and the tests need (valgrind: the C smoke test runs under memcheck).
APT_PACKAGES := libopenblas-dev pkg-config valgrind $(PYTEST_APT)
# Where `make build` leaves libdpo.so (the C library; include/dpo.h is its header).
LIBDIR := .build/$(CONFIG)

.PHONY: help deps build demo bench test test-swift test-c test-python test-cli clean

help:
	@echo "make deps   install what the build and tests need ($(APT_PACKAGES)) if missing"
	@echo "make build  build the library ($(CONFIG)), the dpo command and $(LIBDIR)/libdpo.so"
	@echo "           (for this machine's CPU; NATIVE=0 for a binary that runs on any CPU of the architecture)"
	@echo "make demo   the main job: SFT then DPO of a small byte-level Llama, evaluated on held-out prompts"
	@echo "make bench  DPO step benchmark on the tiny and smollm2-135m shapes"
	@echo "make test   run every test suite (test-swift, test-c, test-python, test-cli)"
	@echo "make test-c       C ABI: header, exported symbols, smoke test under valgrind, examples/train.c"
	@echo "make test-python  the Python package (bindings/python) with pytest, examples/train.py"
	@echo "make clean  remove build products"

deps:
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

# The demo installs what is missing and builds first, so it runs on a fresh clone.
demo: deps build
	$(LIBDIR)/dpo demo --output runs/demo

bench: build
	$(LIBDIR)/dpo bench --shape tiny --steps 5
	$(LIBDIR)/dpo bench --shape smollm2-135m --steps 3

test: test-swift test-c test-python test-cli

test-cli: build
	Tests/cli/run.sh $(LIBDIR)/dpo

test-c: build
	Tests/c/run.sh $(LIBDIR)

# In a release build the package finds .build/release/libdpo.so by itself; other configs point it there.
test-python: build
	PYTHONPATH=bindings/python $(if $(filter release,$(CONFIG)),,DPO_LIBRARY=$(CURDIR)/$(LIBDIR)/libdpo.so) \
		$(PYTHON) -m pytest -q bindings/python/tests

test-swift:
	$(SWIFT) build -c $(CONFIG) --build-tests $(TESTFLAGS)
	$(SWIFT) test -c $(CONFIG) --skip-build $(TESTFLAGS)

clean:
	rm -rf .build
