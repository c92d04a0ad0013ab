"""The one place that owns ONNX Runtime sessions, providers and threads.

Model adapters are pure numpy; they hand inputs to an `OrtRunner` and get output arrays back.

Providers are tried in the configured order and CPU always comes last. On a Jetson (NVIDIA's
onnxruntime-gpu build for JetPack) the order is TensorRT, CUDA, CPU: TensorRT with FP16 and an
engine cache, so the engines built once (`edgegw models warmup`) are loaded at every later start
instead of rebuilt for minutes. If a session cannot be created with a provider (missing CUDA
libraries, an unsupported operator), the next one is tried. The provider a session really runs on
is what `get_providers()` reports first; `chosen_providers()` tells it per model for the status.
"""

from __future__ import annotations

import logging
import threading
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


ProviderPlan = list[tuple[str, dict[str, str]]]
"""ONNX Runtime provider names with their options, in order of preference."""


def plan_providers(wanted: Sequence[str], available: Sequence[str], options: RuntimeOptions,
                   model_path: Path) -> ProviderPlan:
    """The providers to ask for, best first: the wanted ones that are available, then CPU."""
    plan: ProviderPlan = []
    for name in (_PROVIDER_NAMES.get(p.lower(), p) for p in wanted):
        if name not in available or any(name == n for n, _ in plan):
            continue
        if name == "TensorrtExecutionProvider":
            cache = str(options.trt_cache_dir or model_path.parent / "trt-cache")
            plan.append((name, {"device_id": str(options.device_id), "trt_fp16_enable": _flag(options.trt_fp16),
                                "trt_engine_cache_enable": "True", "trt_engine_cache_path": cache,
                                "trt_timing_cache_enable": "True", "trt_timing_cache_path": cache}))
        elif name == "CUDAExecutionProvider":
            plan.append((name, {"device_id": str(options.device_id)}))
        else:
            plan.append((name, {}))
    if not any(n == "CPUExecutionProvider" for n, _ in plan):
        plan.append(("CPUExecutionProvider", {}))
    return plan


def _flag(value: bool) -> str:
    return "True" if value else "False"


_chosen_lock = threading.Lock()
_chosen: dict[str, str] = {}


def chosen_providers() -> dict[str, str]:
    """Per model file loaded in this process, the provider its session runs on (for status)."""
    with _chosen_lock:
        return dict(_chosen)


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - dependency is mandatory
        raise ModelError("onnxruntime is not installed") from exc
    return ort


_shared_lock = threading.Lock()
_shared_registered: bool | None = None


def _shared_cpu_arena(ort: Any) -> bool:
    """Register, once a process, the CPU arena that sessions with `shared_arena` share: it grows by
    what is asked (kSameAsRequested), not by doubling. False (each session keeps its own arena) when
    this ONNX Runtime build cannot."""
    global _shared_registered
    with _shared_lock:
        if _shared_registered is None:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                # max_mem 0: no limit; strategy 1: kSameAsRequested; -1: the defaults for the rest.
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
                _shared_registered = True
            except Exception as exc:  # an ORT build without it raises its own untyped errors
                log.warning("no shared ONNX Runtime arena (%s); each session keeps its own", exc)
                _shared_registered = False
        return _shared_registered


class OrtRunner:
    """One ONNX Runtime inference session with chosen providers, falling back to CPU."""

    def __init__(self, path: Path, options: RuntimeOptions | None = None, *, model: bytes | None = None) -> None:
        """A session for the model file at `path`, or for `model` (serialised ONNX: a load-time
        rewrite of that file, which still names it in logs, metrics and the status)."""
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
        so.enable_mem_pattern = opts.memory_pattern
        if opts.shared_arena and opts.memory_arena and _shared_cpu_arena(ort):
            so.add_session_config_entry("session.use_env_allocators", "1")
        so.log_severity_level = 3
        available = list(ort.get_available_providers())
        wanted = [_PROVIDER_NAMES.get(p.lower(), p) for p in opts.providers]
        missing = [p for p in wanted if p not in available]
        plan = plan_providers(opts.providers, available, opts, path)
        if missing:
            log.warning("providers %s not available in this onnxruntime build; using %s",
                        missing, [n for n, _ in plan])
        self._session = self._first_session(ort, path, so, plan, model)
        self.path = path
        self.input_names: tuple[str, ...] = tuple(i.name for i in self._session.get_inputs())
        self.output_names: tuple[str, ...] = tuple(o.name for o in self._session.get_outputs())
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        if wanted and self.providers[0] != wanted[0]:
            log.warning("%s runs on %s, not %s", path.name, self.providers[0], wanted[0])
        with _chosen_lock:
            _chosen[path.name] = self.providers[0]

    @staticmethod
    def _first_session(ort: Any, path: Path, so: Any, plan: ProviderPlan, model: bytes | None = None) -> Any:
        """A session on the best provider of `plan` that works, dropping the failing ones in turn."""
        errors: list[str] = []
        source = model if model is not None else str(path)
        for start in range(len(plan)):
            names = [n for n, _ in plan[start:]]
            try:
                return ort.InferenceSession(source, sess_options=so, providers=names,
                                            provider_options=[o for _, o in plan[start:]])
            except Exception as exc:  # ORT raises its own untyped exceptions
                errors.append(f"{names[0]}: {exc}")
                if start + 1 < len(plan):
                    log.warning("cannot create a %s session for %s (%s); trying %s", names[0], path.name,
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__, names[1])
        raise ModelError(f"cannot load model {path.name}: {'; '.join(errors)}")

    @property
    def provider(self) -> str:
        """The provider this session runs on (the first of `providers`)."""
        return self.providers[0]

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
