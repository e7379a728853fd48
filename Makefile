PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint bench clean

# torch is installed first from constraints.txt and stays pinned by it while
# pip resolves clipcli's own dependencies, so setup never pulls another build.
setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"

test:
	$(BIN)/python -m pytest
	$(BIN)/ruff check clipcli tests scripts
	$(BIN)/mypy

lint:
	$(BIN)/ruff check clipcli tests scripts
	$(BIN)/ruff format --check clipcli tests scripts
	$(BIN)/mypy

bench:
	$(BIN)/python scripts/bench.py all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
