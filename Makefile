# One entry point for every task. Each target sets up what it needs itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo dev bench clean openapi sdk

# Python >= 3.11 with venv, checked first; a .venv made by another or an old
# Python, or left half-installed, is rebuilt (scripts/check_python.sh).
$(STAMP): pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install:
	@PYTHON="$(PYTHON)" VENV="$(VENV)" bash scripts/check_python.sh
	@$(MAKE) --no-print-directory $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# DATABASE_URL/REDIS_URL when set, else the servers on 127.0.0.1, else embedded ones.
# TEST_WORKERS processes, each test file whole in one of them (its module's stack
# with it); most tests wait on processes they started, so two share two cores.
# Files are handed out in the suite's order (not xdist's largest-first), so any two
# that share a process's stack run in the order they do in one process.
# TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: install lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

demo: install
	bash scripts/demo.sh

# The checked-in OpenAPI document (a test fails when it is stale).
openapi: install
	$(BIN)/python -m api.openapi_export docs/openapi.json

dev: install
	$(BIN)/tabpfn-api dev

# The service against direct tabpfn-client calls (its own stack, torn down after);
# rewrites docs/benchmarks.md. Takes about half an hour on two cores (submit under
# load runs 2 × 60 s; the upload section writes and sends files of up to 500 MiB).
bench: install
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench

# The Python SDK and CLI as a wheel (not on PyPI yet):
#   pip install "clients/python/dist/tabpfn_api_client-<version>-py3-none-any.whl[sklearn]"
SDK_DIST ?= clients/python/dist
sdk: install
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(SDK_DIST) ./clients/python
	rm -rf clients/python/build clients/python/*.egg-info
	@ls $(SDK_DIST)/tabpfn_api_client-*.whl

clean:
	rm -rf $(VENV) .dev *.egg-info .pytest_cache .ruff_cache
