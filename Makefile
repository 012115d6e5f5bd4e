# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint chaos bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## the main job on the embedded default: no Redis, no API key needed
	$(BIN)/ripmap-optimizer demo

test: $(STAMP)  ## the test suite (starts its own redis-server and workers)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

chaos: $(STAMP)  ## the fault-injection suite with larger numbers
	RIPMAP_CHAOS_SCALE=4 $(BIN)/python -m pytest -q -m chaos
	$(BIN)/python -m tests.reliability  # the figures table for RELIABILITY.md

bench: $(STAMP)  ## writes BENCHMARKS.md
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .ripmap .pytest_cache .mypy_cache .ruff_cache
