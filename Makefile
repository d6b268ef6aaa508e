# The two quick-start commands are `make demo` and `make test`; each installs what it runs:
# the demo only msgcube itself, the tests also the test and benchmark extras (pytest,
# mypy, Playwright, …). One venv, one stamp per kind, renewed when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUM := $(shell cksum pyproject.toml | cut -d' ' -f1)
DEMO_STAMP := $(VENV)/.installed-demo-$(SUM)
STAMP := $(VENV)/.installed-dev-$(SUM)

.PHONY: demo serve test lint bench bench-rollup bench-api bench-push bench-sync bench-speed bench-clickhouse clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -e .
	rm -f $(VENV)/.installed-demo-* && touch $@

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	rm -f $(VENV)/.installed-* && touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/msgcube demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: bench-speed bench-rollup bench-api bench-push bench-sync bench-clickhouse

bench-speed: $(STAMP)
	$(BIN)/python bench/speed.py

bench-rollup: $(STAMP)
	$(BIN)/python bench/rollup.py

# wrk comes from Debian; the load generators run on this machine only (loopback).
bench-api: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/api.py

bench-push: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/push.py

bench-sync: $(STAMP)
	$(BIN)/python bench/sync.py

# Debian's clickhouse-server (18.16) and zookeeper, as .ci/run installs them.
bench-clickhouse: $(STAMP)
	$(BIN)/python bench/clickhouse_ingest.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
