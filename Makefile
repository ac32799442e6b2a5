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

.PHONY: run test lint bench serve worker install install-dev clean fuzz

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

## The main suite on TEST_WORKERS processes (xdist; default one per core): it is bound by dlib.
TEST_WORKERS ?= auto
test: install-dev lint
	$(PY) -m pytest -n $(TEST_WORKERS)

## schemathesis against a live server on the embedded store, every operation and check
## (schemathesis.toml), bounded by FUZZ_TIME seconds; `make test` runs a short one in-process.
FUZZ_EXAMPLES ?= 50
FUZZ_TIME ?= 600
fuzz: install-dev
	$(PY) tests/run_fuzz.py --max-examples $(FUZZ_EXAMPLES) --max-time $(FUZZ_TIME)

## Benchmarks print figures and ratios; none is a test. The dev-set ones skip without ../shared.
bench: install-dev
	$(PY) -m bench.store
	$(PY) -m bench.search
	$(PY) -m bench.recluster
	$(PY) -m bench.assignment --tolerances 0.54,0.62 --eps 0.56,0.64
	$(PY) -m bench.assignment_rules --no-scale
	$(PY) -m bench.ingest
	$(PY) -m bench.suggestions
	$(PY) -m bench.corrections
	$(PY) -m bench.blobs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# --- MongoDB stand-in: the mongodb-marked tests, against a wire-protocol server -------------
# nx-27017 (MongoDB's wire protocol over neosqlite/SQLite) in a virtualenv of its own, never
# the app's. It proves the pymongo path, not MongoDB's semantics (README, "Storage"). `make
# test` runs it first, on a free 127.0.0.1 port, in its own pytest process. A failed install
# or start skips it with the reason; so does a TEST_MONGODB_URI of the user's own, as the main
# run covers those tests then.
MONGO_VENV ?= .venv-mongo
MONGO_PY   := $(MONGO_VENV)/bin/python

.PHONY: install-mongo-standin test-mongodb-standin clean-mongo-standin

$(MONGO_VENV)/.installed: requirements-mongo-standin.txt
	rm -rf $(MONGO_VENV)
	# Without a pip of its own (the host's installs into it): ~10 s less on every CI run.
	# --no-deps: the file pins the whole closure, so pip skips resolving it (~2 s).
	$(PYTHON) -m venv --without-pip $(MONGO_VENV)
	$(PYTHON) -m pip --disable-pip-version-check -q --python $(MONGO_PY) install --no-deps \
		-r requirements-mongo-standin.txt
	touch $@

## Never fails: without the stand-in its test run is skipped, saying why.
install-mongo-standin:
	@test -n "$$TEST_MONGODB_URI" || $(MAKE) --no-print-directory $(MONGO_VENV)/.installed \
		|| echo "MongoDB stand-in: install failed (above); its test run will be skipped"

## One pytest process: with each picture analysed once (tests/conftest.py) the run is no longer
## bound by dlib, and two xdist workers each import the app and dlib, collect the suite and
## analyse the pictures again: 1.3-1.6x the CPU, no faster on free cores, slower on busy ones.
test-mongodb-standin: install-dev install-mongo-standin
	$(PY) tests/run_mongo_standin.py --standin-python $(MONGO_PY)

test: test-mongodb-standin
clean: clean-mongo-standin

clean-mongo-standin:
	rm -rf $(MONGO_VENV)

# -- mutation testing ------------------------------------------------------------------------
# `make mutate`: mutmut mutates the persons' bookkeeping (image deletion, thumbnails, and the
# Store methods keeping persons' counters, thumbnails and pages), runs the fast tests that
# guard them ([tool.mutmut] in pyproject.toml: mongomock only) and prints the share killed.
# A clean run each time, in mutants/ (mutmut's work copy): about 8 minutes on two cores.
# Wider: make mutate MUTATE_FUNCTIONS="'services.bookkeeping.*'"; one mutant: mutmut show NAME.
MUTATE_FUNCTIONS ?= \
	'services.bookkeeping.x_remove_image*' 'services.bookkeeping.x_settle_person*' \
	'services.bookkeeping.x_refresh_thumbnail*' 'services.bookkeeping.x_best_face__*' \
	'services.storage.*adjust_person_counts*' 'services.storage.*offer_thumbnail*' \
	'services.storage.*persons_page*' 'services.storage.*images_newest*'
MUTATE_JOBS ?= 2

.PHONY: mutate
mutate: install-dev
	rm -rf mutants
	OPENBLAS_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS) $(MUTATE_FUNCTIONS)
	$(PY) -m bench.mutation_score
# -- end of mutation testing -----------------------------------------------------------------
