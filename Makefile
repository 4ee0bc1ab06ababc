# wsharbor: the two set-up commands are `make run` and `make test`.
# Each creates .venv and installs what it needs by itself.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export WSHARBOR_REQUIRE_SPEEDUPS ?= 1

.PHONY: run test lint typecheck unit docs bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# Reinstall when the build inputs change (the C accelerator is compiled then).
$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py src/wsharbor/protocol/_speedups.c
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# What `make run` needs: the package and uvloop (`--loop auto` serves on it when
# it is installed), not the test tools of .installed.
$(VENV)/.installed-run: $(BIN)/python pyproject.toml setup.py src/wsharbor/protocol/_speedups.c
	$(BIN)/python -m pip install -q -e '.[uvloop]'
	touch $@

# The demo application: echo (/echo), a chat room (/chat) and its page (/),
# with /healthz, /readyz and /metrics, until Ctrl-C or SIGTERM.
run: $(VENV)/.installed-run
	$(BIN)/python -m wsharbor run examples.demo.app:app --host 127.0.0.1 --port 8765 --max-size 4096

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict src

system-deps:
	bash scripts/install-system-deps.sh

unit: $(VENV)/.installed system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider --cov=wsharbor --cov-report=term
	$(BIN)/python -m coverage report --include='*/wsharbor/protocol/*' --fail-under=95

# The API reference and the guides, warnings as errors, in docs/_build/html
# (-E: every page read again, so that no warning hides in an old build).
docs: $(VENV)/.installed
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

test: lint typecheck docs unit

bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .coverage .mypy_cache .ruff_cache .pytest_cache docs/_build
	find src -name '*.so' -delete
