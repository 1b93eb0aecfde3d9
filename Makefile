# Two commands on a fresh Debian 12 / Raspberry Pi OS machine: `make demo` and `make test`.
# Each installs what is missing first (Debian packages, the pinned Node, node_modules).
SHELL := /bin/bash
NODE := .runtime/node/bin/node
NPX := PATH=$(CURDIR)/.runtime/node/bin:$$PATH npm_config_nodedir=$(CURDIR)/.runtime/node $(NODE) .runtime/npm/bin/npx-cli.js

.PHONY: setup build test dist-arm64 dist-host test-arm64 demo bench lint typecheck docs clean

setup:
	@scripts/setup.sh apt node modules

build: setup
	@$(NPX) tsc -p tsconfig.json

typecheck: setup
	@$(NPX) tsc -p tsconfig.test.json

# The whole suite: the host's tap run, then the arm64 bundle built and run under qemu-user; one
# closing line "N passed, N failed" counts both.
test: build typecheck
	@scripts/test.sh

# The Raspberry Pi bundle, cross-compiled: dist/bwc-agent-<version>-linux-arm64.tar.gz.
dist-arm64: build
	@scripts/dist-arm64.sh

# Its twin for this machine's architecture (the update tests and bench): dist/bwc-agent-<version>-linux-<arch>.tar.gz.
dist-host: build
	@scripts/dist-host.sh

# That bundle under qemu-aarch64-static (no binfmt registration); its TAP in .tap/arm64.tap.
test-arm64: dist-arm64
	@scripts/test-arm64.sh

demo: build
	@scripts/demo.sh

bench: build
	@scripts/bench.sh

docs: setup
	@$(NODE) src/config/docs.ts > docs/configuration.md

clean:
	rm -rf dist .tap .build-arm64 .build-host
