"""The one place that owns ONNX Runtime sessions, providers and threads.

Model adapters are pure numpy; they hand inputs to an `OrtRunner` and get output arrays back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.errors import ModelError
from edge.models.config import RuntimeOptions

log = logging.getLogger(__name__)

_PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


TimingObserver = Callable[[str, float], None]
"""Told (model file stem, seconds) after each call; set by a daemon that exports metrics."""
_timing: TimingObserver | None = None


def set_timing_observer(observer: TimingObserver | None) -> None:
    """Have every runner in this process report its call times (None: stop)."""
    global _timing
    _timing = observer


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - dependency is mandatory
        raise ModelError("onnxruntime is not installed") from exc
    return ort


class OrtRunner:
    """One ONNX Runtime inference session with chosen providers, falling back to CPU."""

    def __init__(self, path: Path, options: RuntimeOptions | None = None) -> None:
        ort = _ort()
        opts = options or RuntimeOptions()
        if not path.is_file():
            raise ModelError(f"model file {path} is missing; run `edgegw models fetch`")
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, opts.intra_op_threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.allow_spinning else "0")
        so.enable_cpu_mem_arena = opts.memory_arena
        so.log_severity_level = 3
        available = set(ort.get_available_providers())
        wanted = [_PROVIDER_NAMES.get(p.lower(), p) for p in opts.providers]
        providers = [p for p in wanted if p in available]
        missing = [p for p in wanted if p not in available]
        if missing:
            log.warning("providers %s not available; falling back to %s", missing, providers or ["CPU"])
        if "CPUExecutionProvider" not in providers:
            providers.append("CPUExecutionProvider")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # ORT raises its own untyped exceptions
            raise ModelError(f"cannot load model {path.name}: {exc}") from exc
        self.path = path
        self.input_names: tuple[str, ...] = tuple(i.name for i in self._session.get_inputs())
        self.output_names: tuple[str, ...] = tuple(o.name for o in self._session.get_outputs())
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())

    @property
    def metadata(self) -> Mapping[str, str]:
        """The model's custom metadata map (e.g. PP-OCR's character list)."""
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def run(self, inputs: Mapping[str, NDArray[Any]] | NDArray[Any]) -> list[NDArray[Any]]:
        """Run the model; a bare array feeds the first input. Returns outputs in declared order."""
        feed = {self.input_names[0]: inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
        t0 = time.perf_counter()
        try:
            out: Sequence[NDArray[Any]] = self._session.run(None, feed)
        except Exception as exc:
            raise ModelError(f"{self.path.name} failed: {exc}") from exc
        observer = _timing
        if observer is not None:
            observer(self.path.stem, time.perf_counter() - t0)
        return list(out)
