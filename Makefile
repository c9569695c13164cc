# Two commands: `make demo` and `make test`. Each sets up .venv when it is missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev,nautilus,ccxt]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/knightwatch demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

test: lint types
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/guard_bench.py --json bench-guard.json
	$(BIN)/python bench/audit_bench.py --json bench-audit.json
	$(BIN)/python bench/replay_bench.py --json bench-replay.json
	$(BIN)/python bench/kill_bench.py --json bench-kill.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
