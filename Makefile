# Two entry points: `make quickstart` (the whole journey on synthetic data) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: quickstart test lint bench clean-venv arm-check

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[full-cpu]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/python -m okdhp_edge.quickstart

# the default suite on every core (up to 4; a test file per worker), then the tests that need the
# machine to themselves, from the files that hold them (collecting the whole suite again cost
# ~6 s; tests/test_packaging.py checks the list); `pytest` alone runs everything in one process
SERIAL_TESTS := tests/bench/test_load.py
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		-m "not slow and not serial"
	$(BIN)/python -m pytest -q -m "serial and not slow" $(SERIAL_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only

clean-venv:
	rm -rf $(VENV)

# the torch-free runtime on aarch64 under QEMU user mode (bench/arm_check.sh; docs/arm.md)
arm-check: $(STAMP)
	bench/arm_check.sh
