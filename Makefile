# edgegw: `make demo` runs a demo gateway end to end; `make test` runs the test suite.
# Both set everything up first (virtualenv, package, verified models, mosquitto where possible).

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# --system-site-packages on a Raspberry Pi with a CSI camera: picamera2 comes from apt (docs/platforms.md).
VENV_ARGS ?=

.PHONY: setup models broker demo test test-slow bench gpu-check arm64-smoke lint typecheck typecheck-py310 check clean

$(BIN)/.installed: pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "edgegw needs Python 3.10 or newer")'
	@$(PY) -m venv --help >/dev/null 2>&1 || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv)
	$(PY) -m venv $(VENV_ARGS) $(VENV)
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

# The face and plate paths on a CUDA GPU against CPU: per-model latency and agreement. onnxruntime-gpu
# goes into its own virtualenv (it cannot live beside the CPU onnxruntime of $(VENV)). On a Jetson set
# ORT_GPU to NVIDIA's JetPack wheel (docs/platforms.md); GPU_CHECK_ARGS="--provider tensorrt" for TensorRT.
GPU_VENV ?= bench/.venv-gpu
ORT_GPU  ?= onnxruntime-gpu[cuda,cudnn]
GPU_CHECK_ARGS ?=
$(GPU_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q --upgrade pip
	$(GPU_VENV)/bin/pip install -q -e .
	$(GPU_VENV)/bin/pip uninstall -q -y onnxruntime
	$(GPU_VENV)/bin/pip install -q '$(ORT_GPU)'
	@touch $@

gpu-check: models $(GPU_VENV)/.installed
	$(GPU_VENV)/bin/python bench/gpu_check.py $(GPU_CHECK_ARGS)

# An arm64 Debian bookworm root (Raspberry Pi OS's base) under qemu-user: a clean clone runs
# `make demo` and a core subset of the tests. Tens of minutes; not part of CI (docs/platforms.md).
arm64-smoke:
	scripts/arm64-smoke

lint: setup
	$(BIN)/ruff check edge drivers district tests bench

typecheck: setup
	$(BIN)/mypy

# JetPack 6 ships Python 3.10 and no 3.10 interpreter is packaged here: prove 3.10 compatibility
# statically (typeshed knows which stdlib names are 3.11+; ruff's target is py310 too).
typecheck-py310: setup
	$(BIN)/mypy --python-version 3.10
	$(BIN)/ruff check --target-version py310 edge drivers district tests bench

check: lint typecheck test

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
