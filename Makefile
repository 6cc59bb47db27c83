# Two commands on a fresh machine:  make demo   |   make test
# Both build .venv from requirements/ (the pinned reference environment) first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

# No telemetry, no hub: repro's builds read local files only.
export DVC_NO_ANALYTICS := 1
export HF_DATASETS_OFFLINE := 1
export HF_HUB_OFFLINE := 1

.PHONY: venv dev kernels demo test test-fast test-durations lint lint-quick bench freeze clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# uv installs the pinned environment, unpacking on every core. uv does not read pip's
# configuration, so pip's find-links and index URLs are handed to it, as `verify --toolchain
# recreate` does. repro itself goes in editable through uv too: 2.7 s against 11.3 s with pip,
# same files (PEP 660, setuptools).
#
# Nothing is byte-compiled at install: compiling all ~16,000 installed modules took 48 s of CPU, and
# the suite imports about a third of them. Instead make lets Python cache what it compiles (its
# default; PYTHONDONTWRITEBYTECODE, set on this project's machines, would make every process compile
# its imports again), so each module is compiled once, by the first process that imports it.
# Build children write their cache either way (their environment is an allowlist), and stage
# children never do (repro.builder.stage). BENCHMARKS.md has the figures.
unexport PYTHONDONTWRITEBYTECODE

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install -q "$$(grep '^uv==' requirements/dev.txt)"

UV_INSTALL = $(BIN)/uv pip install -q --python $(BIN)/python --index-strategy unsafe-best-match \
	$$(PYTHONPATH=. $(BIN)/python -c 'from repro.verify.recreate import pip_index_options as o; print(*o())')

$(VENV)/.ref-stamp: requirements/reference.txt pyproject.toml | $(BIN)/uv
	$(UV_INSTALL) -r requirements/reference.txt
	$(UV_INSTALL) --no-deps -e .
	touch $@

# The default profile's portable CPU kernels (repro/train/kernels, docs/portable.md) are C++ built
# against the installed torch, once per toolchain, into the user's cache. Built here so that the first
# build (or the test suite's parallel workers) need not: ~10 s of one core. A build builds it anyway
# if it is missing or its sources changed.
kernels: $(VENV)/.ref-stamp
	$(BIN)/python -c 'from repro.environment.kernels import library; print("portable kernels:", library()[0])'

$(VENV)/.dev-stamp: requirements/dev.txt $(VENV)/.ref-stamp
	$(UV_INSTALL) -r requirements/dev.txt
	touch $@

venv: $(VENV)/.ref-stamp kernels
dev: $(VENV)/.dev-stamp kernels

## demo: train the bundled example, then verify the lockfile it wrote.
demo: venv
	$(BIN)/repro train
	@echo "--- weights digest (sha256sum):"
	@sha256sum out/digits/model.safetensors
	@echo "--- verify: rebuild from the lock in a fresh process, compare bytes (exit 0 = bit-identical):"
	$(BIN)/repro verify out/digits/repro.lock

# The whole suite on every core, longest units first (tests/scheduling.py), its temporary files where
# scripts/test_tmpdir.sh says; sets $suite to pytest's exit code. $(1): more pytest arguments.
SUITE = tmp=$$(scripts/test_tmpdir.sh); echo "--- temporary files: $$tmp"; \
	TMPDIR=$$tmp $(BIN)/python -m pytest -n auto --dist loadgroup $(1); suite=$$?; \
	case $$tmp in */repro-tests.*) if test $$suite -eq 0; then rm -rf "$$tmp"; fi;; esac

## test: the linters and the import contract, then the whole suite (slow tests included) on every core.
## mypy --strict (~16 s from a fresh cache, one core) checks while the suite runs; either failing fails.
## The suite's temporary files go to a memory filesystem when there is room (scripts/test_tmpdir.sh says
## why); that folder is removed after a passing run and kept, for a look, after a failing one.
test: dev lint-quick
	@$(BIN)/mypy > $(VENV)/mypy.log 2>&1 & typing=$$!; \
	  $(call SUITE,); \
	  wait $$typing; typed=$$?; echo "--- mypy --strict:"; cat $(VENV)/mypy.log; \
	  test $$suite -eq 0 && test $$typed -eq 0

test-fast: dev
	$(BIN)/python -m pytest -m "not slow"

## test-durations: run the suite and rewrite tests/durations.json, the longest-first order `make test` uses.
test-durations: dev
	@$(call SUITE,--store-durations); exit $$suite

lint: dev lint-quick
	$(BIN)/mypy

## lint-quick: ruff, the import contract and no import cycle (seconds; mypy is the slow linter).
## check_import_cycles reads every import statement with ast, function-level ones included.
lint-quick: dev
	$(BIN)/ruff check repro tests benchmarks pipelines scripts/check_import_cycles.py
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_import_cycles.py

bench: venv
	for b in train_overhead verify_time hash_speed checkpoint_cost portable_cost lm_tokens; do $(BIN)/python benchmarks/$$b.py || exit 1; done

## freeze: rewrite the reference environment from a fresh venv (review the diff!).
freeze:
	rm -rf /tmp/repro-freeze && $(PYTHON) -m venv /tmp/repro-freeze
	/tmp/repro-freeze/bin/pip install -q -e '.[lm,trust]'
	/tmp/repro-freeze/bin/pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
