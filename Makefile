# Two commands on a fresh Debian 12 / Raspberry Pi OS machine: `make demo` and `make test`.
# Each installs what is missing first (Debian packages, the pinned Node, node_modules).
SHELL := /bin/bash
NODE := .runtime/node/bin/node
NPX := PATH=$(CURDIR)/.runtime/node/bin:$$PATH npm_config_nodedir=$(CURDIR)/.runtime/node $(NODE) .runtime/npm/bin/npx-cli.js

.PHONY: setup build test demo bench lint typecheck docs clean

setup:
	@scripts/setup.sh apt node modules

build: setup
	@$(NPX) tsc -p tsconfig.json

typecheck: setup
	@$(NPX) tsc -p tsconfig.test.json

test: build typecheck
	@scripts/test.sh

demo: build
	@scripts/demo.sh

bench: build
	@scripts/bench.sh

docs: setup
	@$(NODE) src/config/docs.ts > docs/configuration.md

clean:
	rm -rf dist .tap
