# The two commands a new user runs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Exact versions, with hashes, of everything cronwork runs with and is developed with;
# written by `make lock` from pyproject.toml, installed by every target below, CI and the
# Dockerfile.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock

.PHONY: run test test-chaos lint check install install-dev lock bench clean

run: $(VENV)/.installed
	$(BIN)/cronwork up

test: $(VENV)/.installed-dev
	$(BIN)/pytest $(PYTEST_ARGS)

# The chaos test alone; CRONWORK_CHAOS_SECONDS (default 70) and CRONWORK_CHAOS_SEED choose
# how long and which random story.
test-chaos: $(VENV)/.installed-dev
	$(BIN)/pytest -q tests/acceptance/test_chaos.py $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services actors bench

check: $(VENV)/.installed
	$(BIN)/cronwork check

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Every benchmark against its same-run baseline, at quick sizes; `make bench BENCH_ARGS=--full`
# for the sizes the goals are stated at (over an hour), `BENCH_ARGS='--only burst'` for one.
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench $(BENCH_ARGS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The locked dependencies (pip checks every hash), then cronwork itself with nothing
# resolved or downloaded: --no-build-isolation builds it with the locked setuptools.
# Re-run whenever the lock or the project's metadata changes.
$(VENV)/.installed: $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The dev lock holds every runtime pin too (it is resolved within requirements.lock).
$(VENV)/.installed-dev: $(DEV_LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(VENV)/.installed $@

# Rewrite both locks from pyproject.toml, after editing its dependencies. Versions already
# locked are kept while they still fit; `make lock LOCK_ARGS=--upgrade` takes the newest of
# everything. Universal: one lock for Linux, macOS and Windows, for every Python that
# pyproject.toml allows. setuptools (the build backend) is locked too, read from
# [build-system].
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --generate-hashes \
	--custom-compile-command 'make lock' $(LOCK_ARGS)
BUILD_REQUIRES = $(BIN)/python -c 'import tomllib; \
	print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'

lock: $(VENV)/.installed-dev
	$(BUILD_REQUIRES) | $(UV_COMPILE) pyproject.toml - -o $(LOCK)
	$(BUILD_REQUIRES) | $(UV_COMPILE) pyproject.toml - --extra dev -c $(LOCK) -o $(DEV_LOCK)

clean:
	rm -rf $(VENV) .cronwork *.egg-info .pytest_cache .mypy_cache .ruff_cache
