"""Which file a model is loaded from: its verified float graph, or the int8 copy derived from it.

An int8 copy (`NAME.int8.onnx`, written by `edgegw models quantize` or after `edgegw models fetch`)
is used only when the runtime options ask for it, only on CPU (GPU providers do not run
QLinearConv and would fall back to the CPU node by node, slower than the float graph), and only
when the file exists; otherwise the float graph is loaded and a missing copy is logged once.
Which models default to int8 is decided by measurement (bench/bench_int8.py, docs/gate.md).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from edge.models.config import RuntimeOptions
from edge.models.manifest import Manifest, model_path

log = logging.getLogger(__name__)

INT8_SUFFIX = ".int8.onnx"

_warned: set[Path] = set()
_warned_lock = threading.Lock()


def int8_path(models_dir: Path, name: str) -> Path:
    """Where the quantised copy of model `name` lives."""
    return models_dir / f"{name}{INT8_SUFFIX}"


def wants_int8(name: str, options: RuntimeOptions | None) -> bool:
    """Whether these options (None: the defaults) ask for the int8 copy of `name` (CPU-only providers)."""
    opts = options or RuntimeOptions()
    if name not in opts.int8_models:
        return False
    return all(p.lower() in ("cpu", "cpuexecutionprovider") for p in opts.providers)


def runtime_model_path(models_dir: Path, name: str, options: RuntimeOptions | None = None,
                       manifest: Manifest | None = None) -> Path:
    """The file to load for model `name`: its int8 copy when asked for and present, else the float graph."""
    if wants_int8(name, options):
        candidate = int8_path(models_dir, name)
        if candidate.is_file():
            return candidate
        with _warned_lock:
            first = candidate not in _warned
            _warned.add(candidate)
        if first:
            # Not an error: the float graph is as accurate, only slower on CPU.
            log.warning("%s is missing (run `edgegw models quantize`); using the float %s", candidate.name, name)
    return model_path(models_dir, name, manifest)
