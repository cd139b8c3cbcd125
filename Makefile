# seglab: two commands set everything up. `make demo` runs the main job, `make test` runs the tests.
# Each creates .venv when missing. TORCH_SPEC chooses the torch build installed when none is present
# (the default is the CPU build these machines carry; a lab with a GPU may say e.g. TORCH_SPEC=torch).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-output
# Generated benchmark data (about 10 GB, reused between runs); BENCH_ARGS e.g. --quick or --only B1
BENCH_WORK ?= /tmp/seglab-bench
BENCH_ARGS ?=

.PHONY: setup demo test bench lint ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/seglab demo $(DEMO_OUT) --overwrite

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_WORK) $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

ui: $(STAMP)
	$(BIN)/seglab ui

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(DEMO_OUT)
