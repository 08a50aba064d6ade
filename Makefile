# esap-prefect: `make demo` runs the main job, `make test` the test suite.
# Both create .venv from the lock on first use; nothing else needs installing by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export UV_CACHE_DIR := $(CURDIR)/.cache/uv

.PHONY: install demo up test test-fast lint bench bench-dirac bench-staging bench-gateway bench-pools bench-pool-start bench-dirac-pool bench-containers bench-cli bench-concordia bench-kubernetes bench-outages bench-scale lock

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/esap-prefect demo

up: $(STAMP)
	$(BIN)/esap-prefect up

test: $(STAMP)
	$(BIN)/pytest --durations=25

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/foundation.py

bench-dirac: $(STAMP)
	$(BIN)/python bench/dirac.py

bench-staging: $(STAMP)
	$(BIN)/python bench/staging.py

bench-gateway: $(STAMP)
	$(BIN)/python bench/gateway.py

bench-dirac-pool: $(STAMP)
	$(BIN)/python bench/dirac_pool.py

bench-concordia: $(STAMP)
	$(BIN)/python bench/concordia.py

bench-pools: $(STAMP)
	$(BIN)/python bench/pools.py

bench-pool-start: $(STAMP)
	$(BIN)/python bench/pool_start.py

bench-containers: $(STAMP)
	$(BIN)/python bench/container_facilities.py

bench-cli: $(STAMP)
	$(BIN)/python bench/cli.py

bench-kubernetes: $(STAMP)
	$(BIN)/python bench/kubernetes.py

bench-outages: $(STAMP)
	$(BIN)/python bench/outages.py

bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py

# Refresh the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip compile --quiet pyproject.toml --extra dev --python 3.11 \
		--python-platform x86_64-manylinux_2_28 -o requirements.lock
