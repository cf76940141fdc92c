# Quick start: `make demo` and `make test` on a machine with only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: venv demo test lint format boundscheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,plot,faiss,ray]"
	# PyTorch is optional: the deep network's independent oracle and the dense baselines.
	$(BIN)/python -m pip install --quiet "torch==2.13.0" || echo "PyTorch not installed: its tests skip"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/corrtree demo --out $(DEMO_OUT) --overwrite

lint: $(STAMP)
	$(BIN)/ruff check corrtree tests benchmarks
	$(BIN)/ruff format --check corrtree tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format corrtree tests benchmarks
	$(BIN)/ruff check --fix corrtree tests benchmarks

# Kernels again with bounds checking on (separate cache so the checked build is used).
boundscheck: $(STAMP)
	NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=$(CURDIR)/.numba-boundscheck \
		$(BIN)/python -m pytest -m boundscheck -p no:cacheprovider

test: lint $(STAMP)
	$(BIN)/python -m pytest
	$(MAKE) boundscheck

clean:
	rm -rf $(VENV) .numba-boundscheck .pytest_cache .ruff_cache
