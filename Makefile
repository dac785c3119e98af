# Sluice developer commands. Each target sets up what it needs by itself.
#   make serve   run the gateway on the embedded default config (mock provider, offline)
#   make test    install everything the tests need, then run every check CI runs
#   make bench   run the benchmark harness (bench/README.md)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# apt-get needs root: sudo when not already root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test lint typecheck unit e2e bench generate clean redis-server codegen-plugins

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./clients/python -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/sluice serve $(ARGS)

tests/e2e/node/node_modules/.installed: tests/e2e/node/package.json tests/e2e/node/package-lock.json
	cd tests/e2e/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

clients/typescript/node_modules/.installed: clients/typescript/package.json clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# buf.gen.yaml's Go plugins (tests/codegen): Debian's packages, no Go toolchain.
codegen-plugins: clients/typescript/node_modules/.installed
	command -v protoc-gen-go >/dev/null && command -v protoc-gen-go-grpc >/dev/null || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y protoc-gen-go protoc-gen-go-grpc)

# The Redis tests run a real redis-server (tests/redis_server.py).
redis-server:
	command -v redis-server >/dev/null || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y redis-server)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/check_imports.py server/sluice
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code
	$(BIN)/buf breaking --against '.git#branch=main'
	$(BIN)/python clients/python/scripts/generate.py --check
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) tests/e2e/node/node_modules/.installed redis-server codegen-plugins lint typecheck
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

generate: $(STAMP)
	$(BIN)/python clients/python/scripts/generate.py

clean:
	rm -rf $(VENV) tests/e2e/node/node_modules clients/typescript/node_modules
