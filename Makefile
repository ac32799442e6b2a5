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

.PHONY: run test lint bench serve install install-dev clean

$(VENV)/.installed: requirements.txt requirements-face.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -r requirements-face.txt
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
	$(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

lint: install-dev
	$(VENV)/bin/ruff check .

test: install-dev lint
	$(PY) -m pytest

## Benchmarks print figures and ratios; none is a test. The dev-set ones skip without ../shared.
bench: install-dev
	$(PY) bench/store.py
	$(PY) bench/search.py
	$(PY) bench/recluster.py
	$(PY) bench/assignment.py --tolerances 0.54,0.62 --eps 0.56,0.64
	$(PY) bench/assignment_rules.py --no-scale

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
