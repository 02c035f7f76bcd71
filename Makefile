# One entry point for every task. Each target sets up what it needs itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo dev bench clean openapi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# DATABASE_URL/REDIS_URL when set, else the servers on 127.0.0.1, else embedded ones.
test: install lint
	$(BIN)/python -m pytest

demo: install
	bash scripts/demo.sh

# The checked-in OpenAPI document (a test fails when it is stale).
openapi: install
	$(BIN)/python -m api.openapi_export docs/openapi.json

dev: install
	$(BIN)/tabpfn-api dev

# The service against direct tabpfn-client calls (its own stack, torn down after);
# rewrites docs/benchmarks.md. Takes about five minutes on two cores.
bench: install
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .dev *.egg-info .pytest_cache .ruff_cache
