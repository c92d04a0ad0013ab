# edgegw: `make demo` runs a demo gateway end to end; `make test` runs the test suite.
# Both set everything up first (virtualenv, package, verified models, mosquitto where possible).

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: setup models broker demo test test-slow bench lint typecheck typecheck-py310 check clean

$(BIN)/.installed: pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "edgegw needs Python 3.10 or newer")'
	@$(PY) -m venv --help >/dev/null 2>&1 || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/.installed

models: setup
	$(BIN)/edgegw models fetch

# mosquitto for the tests (and the demo, which falls back to an embedded broker without it).
broker:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto)

demo: models
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || \
	  ($(SUDO) apt-get install -y -q mosquitto 2>/dev/null) || $(BIN)/pip install -q -e '.[demo]'
	$(BIN)/edgegw demo

# pytest exits 5 when it collects no test; treat that as a failure only when tests were expected.
test: models broker
	$(BIN)/pytest $(PYTEST_ARGS)

test-slow: models broker
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

bench: models broker
	$(BIN)/python bench/run.py

lint: setup
	$(BIN)/ruff check edge drivers tests bench

typecheck: setup
	$(BIN)/mypy

# JetPack 6 ships Python 3.10 and no 3.10 interpreter is packaged here: prove 3.10 compatibility
# statically (typeshed knows which stdlib names are 3.11+; ruff's target is py310 too).
typecheck-py310: setup
	$(BIN)/mypy --python-version 3.10
	$(BIN)/ruff check --target-version py310 edge drivers tests bench

check: lint typecheck test

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
