# Two commands: `make demo` and `make test`. Each sets up .venv when it is missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Everything the suite exercises; both the pure and the compiled venv install it.
EXTRAS := all,dev,nautilus,ccxt,fix
# The compiled build: the same package with knightwatch.build.HOT_PATH compiled by mypyc,
# installed (not editable) in its own venv, rebuilt when the source changes.
MYPYC := .venv-mypyc
MYPYC_STAMP := $(MYPYC)/.installed
SOURCES := $(shell find src -name '*.py') pyproject.toml hatch_build.py

.PHONY: demo test lint types pytest compiled test-compiled bench clean browser

# The console's browser tests drive the distribution's chromium (never a downloaded one).
# Installed here when missing and we are root; otherwise the run stops, naming what to do.
CHROMIUM ?= $(or $(KW_CHROMIUM),$(shell command -v chromium 2>/dev/null),/usr/bin/chromium)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/knightwatch demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

test: lint types pytest test-compiled

browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "browser tests: installing the distribution's chromium (apt-get, about 1 minute once)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "browser tests: no chromium at $(CHROMIUM); run 'apt-get install chromium' as root (or set KW_CHROMIUM)" >&2; \
	    exit 1; \
	  fi; \
	fi

pytest: $(STAMP) browser
	$(BIN)/pytest

# With a C compiler: build once per source change, then the whole suite again on the
# compiled package (tests/test_build.py checks it is the compiled one and that it
# decides and records byte for byte as the pure one). Without one the run fails, naming it:
# the compiled build is part of what is tested, never skipped.
$(MYPYC_STAMP): $(SOURCES)
	@if ! command -v $${CC:-cc} >/dev/null 2>&1; then \
	  echo "compiled build: no C compiler ($${CC:-cc}) on PATH; install one (apt-get install build-essential)" >&2; \
	  exit 1; \
	else \
	  set -e; \
	  test -x $(MYPYC)/bin/python || $(PY) -m venv $(MYPYC); \
	  $(MYPYC)/bin/python -m pip install --quiet --upgrade pip; \
	  $(MYPYC)/bin/python -m pip install --quiet '.[$(EXTRAS)]'; \
	  HATCH_BUILD_HOOK_ENABLE_CUSTOM=true \
	    $(MYPYC)/bin/python -m pip install --quiet --force-reinstall --no-deps .; \
	  echo "compiled build: $$($(MYPYC)/bin/python -m knightwatch.build)"; \
	  touch $@; \
	fi

compiled: $(MYPYC_STAMP)

test-compiled: $(MYPYC_STAMP) browser
	KNIGHTWATCH_EXPECT_BUILD=mypyc $(MYPYC)/bin/pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/guard_bench.py --json bench-guard.json
	$(BIN)/python bench/audit_bench.py --json bench-audit.json
	$(BIN)/python bench/replay_bench.py --json bench-replay.json
	$(BIN)/python bench/kill_bench.py --json bench-kill.json
	$(BIN)/python bench/console_bench.py --json bench-console.json

clean:
	rm -rf $(VENV) $(MYPYC) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
