# wsharbor: the two set-up commands are `make run` and `make test`.
# Each creates .venv and installs what it needs by itself.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export WSHARBOR_REQUIRE_SPEEDUPS ?= 1

.PHONY: run test lint typecheck unit docs bench attack fuzz clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# Reinstall when the build inputs change (the C accelerator is compiled then).
$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py src/wsharbor/protocol/_speedups.c src/wsharbor/asyncio/_sendeach.c
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# What `make run` needs: the package and uvloop (`--loop auto` serves on it when
# it is installed), not the test tools of .installed.
$(VENV)/.installed-run: $(BIN)/python pyproject.toml setup.py src/wsharbor/protocol/_speedups.c src/wsharbor/asyncio/_sendeach.c
	$(BIN)/python -m pip install -q -e '.[fast]'
	touch $@

# The demo application: echo (/echo), a chat room (/chat) and its page (/),
# with /healthz, /readyz and /metrics, until Ctrl-C or SIGTERM.
run: $(VENV)/.installed-run
	$(BIN)/python -m wsharbor run examples.demo.app:app --host 127.0.0.1 --port 8765 --max-size 4096

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests examples benchmarks fuzz
	$(BIN)/ruff format --check src tests examples benchmarks fuzz

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict src

system-deps:
	bash scripts/install-system-deps.sh

# The whole suite, then the tests of the protocol and of the layers that drive
# it (asyncio, sync, the websockets-compatible API) again on the pure-Python
# fallback (WSHARBOR_NO_SPEEDUPS=1: the C accelerator not loaded; about 3 min).
unit: $(VENV)/.installed system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider --cov=wsharbor --cov-report=term
	$(BIN)/python -m coverage report --include='*/wsharbor/protocol/*' --fail-under=95
	WSHARBOR_NO_SPEEDUPS=1 WSHARBOR_REQUIRE_SPEEDUPS=0 $(BIN)/python -m pytest -q -p no:cacheprovider tests/protocol tests/asyncio tests/sync tests/compat

# The API reference and the guides, warnings as errors, in docs/_build/html
# (-E: every page read again, so that no warning hides in an old build).
docs: $(VENV)/.installed
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

test: lint typecheck docs unit

# The throughput benchmarks, then fan-out across workers (python -m
# benchmarks.rooms: one room of 10,000 subscribers over memory:// and Redis,
# beside websockets + redis-py and Socket.IO; it starts its own redis-server).
bench: $(VENV)/.installed system-deps
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.rooms $(ROOMS_ARGS)

# The attack suite (SECURITY.md): wsharbor beside websockets, same limits, from
# 127.0.0.1 only, about 10 minutes; ATTACK_ARGS='--quick', '--only NAME', '--markdown'.
attack: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[attack]'
	$(BIN)/python -m benchmarks.attacks $(ATTACK_ARGS)

# Coverage-guided fuzzing (fuzz/README.md): each harness for FUZZ_SECONDS, from
# its seeds in fuzz/corpus/; new inputs, crashes and logs go to fuzz/.scratch/.
# Fails when a harness crashes. FUZZ_TARGETS=http runs one.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= frames connection utf8 deflate http headers uri
FUZZ_SCRATCH ?= fuzz/.scratch

fuzz: $(VENV)/.installed
	@$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[fuzz]'
	@status=0; for target in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_SCRATCH)/corpus/$$target $(FUZZ_SCRATCH)/crashes; \
		log=$(FUZZ_SCRATCH)/$$target.log; \
		echo "fuzz_$$target: $(FUZZ_SECONDS) s, log in $$log"; \
		if $(BIN)/python fuzz/fuzz_$$target.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_SCRATCH)/crashes/$$target- \
			$(FUZZ_SCRATCH)/corpus/$$target fuzz/corpus/$$target >$$log 2>&1; then \
			grep -E '^#[0-9]+[[:space:]]' $$log | tail -1; grep -E '^Done [0-9]+ runs' $$log; \
		else \
			status=1; grep -A30 -E 'Uncaught Python exception|ERROR: libFuzzer' $$log | head -60; \
			echo "fuzz_$$target FAILED: input in $(FUZZ_SCRATCH)/crashes/"; \
		fi; \
	done; exit $$status

clean:
	rm -rf $(VENV) build src/*.egg-info .coverage .mypy_cache .ruff_cache .pytest_cache fuzz/.scratch docs/_build
	find src -name '*.so' -delete
