# Two entry points: `make quickstart` (the whole journey on synthetic data) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test lint bench clean-venv

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[full-cpu]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/python -m okdhp_edge.quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only

clean-venv:
	rm -rf $(VENV)
