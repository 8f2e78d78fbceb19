# One entry point for every check. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
TOOLS := .tools
NODE22 := $(TOOLS)/node_modules/node/bin/node
CONFIG ?= examples/config.yaml

.PHONY: up test unit lint typecheck fuzz bench lock install redis chromium node22 conformance clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

# Regenerate the lockfile after changing pyproject.toml.
lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra fuzz --extra bench -o requirements.lock --python 3.11 -q

# Redis for the multi-replica session-store tests: Debian's redis-server.
redis:
	@command -v redis-server >/dev/null || test -x /usr/bin/redis-server || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# Headless Chromium for the status page's browser test (tests/integration/test_status_page.py):
# Debian's chromium.
chromium:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Node 22 from the npm registry (the system Node is 20): Inspector and the conformance suite need it.
node22: $(NODE22)
$(NODE22): tools/package.json tools/package-lock.json
	mkdir -p $(TOOLS)
	cp tools/package.json tools/package-lock.json $(TOOLS)/
	cd $(TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

up: install node22
	$(BIN)/mcp-gateway up --config $(CONFIG)

# Two pytest-xdist workers (the tests are isolated: ephemeral ports, their own work
# directories), each test file on one worker (the fault suite's figures are per file):
# about half the time of one process on two cores.
test: install redis chromium node22
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile

unit: install
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check src tests fuzz bench
	$(BIN)/mypy

fuzz: install
	$(BIN)/python fuzz/run.py --total-runs 1000000

bench: install redis
	$(BIN)/python -m bench

conformance: install node22
	$(BIN)/pytest -q tests/e2e/test_conformance.py tests/e2e/test_conformance_modern.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .hypothesis
