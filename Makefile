# The two commands of the README, and the tools behind them.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# buf, pinned in .ci/tools (npm); BUF_AGAINST is what `buf breaking` compares
# protos/ with: main, unless a deliberate break names another base.
BUF := .ci/tools/node_modules/.bin/buf
BUF_AGAINST ?= .git\#branch=main

.PHONY: demo test lint typecheck protolint protos check-protos up clean faults

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

lint: $(STAMP) protolint
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests

$(BUF): .ci/tools/package.json .ci/tools/package-lock.json
	npm ci --prefix .ci/tools --silent --no-audit --no-fund
	touch $(BUF)

## protolint: buf's style and a comment on every element; no break against main.
protolint: $(BUF)
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(BUF) breaking --against '$(BUF_AGAINST)'

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
