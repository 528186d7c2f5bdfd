# swift-dpo: the commands people use. `make help` lists them.
SWIFT ?= swift
CONFIG ?= release
# Tests use @testable imports, which release builds allow only with testing enabled.
TESTFLAGS := -Xswiftc -enable-testing
# Debian packages the build and the tests need.
APT_PACKAGES := libopenblas-dev pkg-config

.PHONY: help deps build test test-swift clean

help:
	@echo "make deps   install what the build needs (libopenblas-dev, pkg-config) if missing"
	@echo "make build  build the library ($(CONFIG))"
	@echo "make test   run every test suite"
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
	$(SWIFT) build -c $(CONFIG)

test: test-swift

test-swift:
	$(SWIFT) build -c $(CONFIG) --build-tests $(TESTFLAGS)
	$(SWIFT) test -c $(CONFIG) --skip-build $(TESTFLAGS)

clean:
	rm -rf .build
