# The two commands of the README, and the tools behind them.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck protos check-protos up clean faults

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

## make demo: the platform on embedded servers, the story so far, then stop.
demo: $(STAMP)
	$(BIN)/scf demo

## make test: lint, type check, and the whole test suite.
test: $(STAMP) lint typecheck
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests

typecheck: $(STAMP)
	$(BIN)/mypy

## make faults: the long fault runs of docs/reliability.md (several minutes);
## `make test` runs short ones (tests/test_faults.py).
faults: $(STAMP)
	$(BIN)/scf bench faults --count 300 --concurrency 20 --json faults.json
	$(BIN)/scf bench faults --cluster --count 300 --concurrency 20 --json faults-cluster.json

## make protos: regenerate services/gen from protos/.
protos: $(STAMP)
	$(BIN)/python -m services.devtools.genprotos

check-protos: $(STAMP)
	$(BIN)/python -m services.devtools.genprotos --check

up: $(STAMP)
	$(BIN)/scf up

clean:
	rm -rf $(VENV) .scf-data .pytest_cache .mypy_cache .ruff_cache
