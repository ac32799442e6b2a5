# Two commands matter: `make run` and `make test`. Every install step lives here so that a
# clean clone on a machine with only Python 3.11+ gets the same environment as CI.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

HOST ?= 0.0.0.0
PORT ?= 5000
DATA_DIR ?= ./data
export HOST PORT DATA_DIR

.PHONY: run test lint bench serve worker install install-dev clean

# The project itself is installed editable: tests, bench and the CLI import it without path
# tricks, and `flask --app wsgi gallery ...` works from any folder.
$(VENV)/.installed: requirements.txt requirements-face.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -r requirements-face.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Serve on $(HOST):$(PORT) with the embedded store in $(DATA_DIR) unless MONGODB_URI is set.
run: install
	$(PY) app.py

## Production-style: gunicorn with gunicorn.conf.py.
serve: install
	$(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

## A jobs worker of your own (JOBS_WORKER=external); `run` and `serve` start one by default.
worker: install
	$(VENV)/bin/flask --app wsgi gallery worker

lint: install-dev
	$(VENV)/bin/ruff check .

test: install-dev lint
	$(PY) -m pytest

## Benchmarks print figures and ratios; none is a test. The dev-set ones skip without ../shared.
bench: install-dev
	$(PY) -m bench.store
	$(PY) -m bench.search
	$(PY) -m bench.recluster
	$(PY) -m bench.assignment --tolerances 0.54,0.62 --eps 0.56,0.64
	$(PY) -m bench.assignment_rules --no-scale
	$(PY) -m bench.ingest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
