# EnerLink: two commands. `make run` runs the whole pipeline with 3 simulated meters;
# `make test` runs the test suite against real Mosquitto, Redis and PostgreSQL.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
METERS ?= 3
# test processes side by side (pytest-xdist): the tests mostly wait on their services and subprocesses
TEST_WORKERS ?= 2

.PHONY: run test lint format schemas services venv bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[edge,sim,dev]'
	touch $@

venv: $(VENV)/.installed

services: venv
	PYTHON=$(PY) bash scripts/ensure-services.sh

run: venv services
	$(VENV)/bin/enerlink up --meters $(METERS)

test: venv services
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/typecheck.py
	$(PY) -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_layout.py

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

schemas: venv
	$(PY) -m enerlink.schemas.jsonschema

bench: venv services
	$(PY) bench/ingest.py
	$(PY) bench/aggregate.py
	$(PY) bench/archive.py

clean:
	rm -rf $(VENV) .run .pytest_cache
