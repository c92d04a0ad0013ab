"""Provider selection (TensorRT with FP16 and an engine cache → CUDA → CPU) and `edgegw models warmup`.

No GPU here: the plan and the fallback are tested with the real CPU build of ONNX Runtime (asking
for TensorRT and CUDA ends on CPU, and says so) and with a stand-in `onnxruntime` whose GPU sessions
fail, as they do on a Jetson without the CUDA libraries. `make gpu-check` runs on a GPU machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge.cli import main
from edge.errors import ModelError
from edge.models.config import RuntimeOptions
from edge.models.runner import OrtRunner, chosen_providers, plan_providers
from tests.conftest import MODELS_DIR

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
MODEL = Path("/opt/edgegw/models/yunet.edge.onnx")


def test_plan_on_a_jetson_is_tensorrt_fp16_with_a_cache_then_cuda_then_cpu() -> None:
    plan = plan_providers(("tensorrt", "cuda", "cpu"), [TRT, CUDA, CPU], RuntimeOptions(), MODEL)
    assert [name for name, _ in plan] == [TRT, CUDA, CPU]
    trt = plan[0][1]
    assert trt["trt_fp16_enable"] == "True" and trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == "/opt/edgegw/models/trt-cache"
    assert plan[1][1] == {"device_id": "0"} and plan[2][1] == {}
    fp32 = plan_providers(("tensorrt",), [TRT, CPU], RuntimeOptions(trt_fp16=False, trt_cache_dir=Path("/var/c")),
                          MODEL)
    assert fp32[0][1]["trt_fp16_enable"] == "False" and fp32[0][1]["trt_engine_cache_path"] == "/var/c"


def test_plan_keeps_what_is_available_and_always_ends_on_cpu() -> None:
    assert plan_providers(("tensorrt", "cuda"), [CPU], RuntimeOptions(), MODEL) == [(CPU, {})]
    assert [n for n, _ in plan_providers(("cuda", "CUDA", "cpu"), [CUDA, CPU], RuntimeOptions(), MODEL)] == [CUDA, CPU]
    assert [n for n, _ in plan_providers(("cpu", "cuda"), [CUDA, CPU], RuntimeOptions(), MODEL)] == [CPU, CUDA]
    assert plan_providers((), [CUDA, CPU], RuntimeOptions(), MODEL) == [(CPU, {})]


class _Session:
    def __init__(self, providers: list[str]) -> None:
        self._providers = providers

    def get_providers(self) -> list[str]:
        return self._providers


def test_a_provider_whose_session_fails_falls_through_to_the_next() -> None:
    tried: list[list[str]] = []

    def session(path: str, sess_options: Any, providers: list[str], provider_options: list[dict[str, str]]) -> Any:
        tried.append(providers)
        assert len(provider_options) == len(providers)
        if providers[0] == TRT:
            raise RuntimeError("TensorRT EP: libnvinfer.so.10: cannot open shared object file")
        if providers[0] == CUDA:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return _Session(providers)

    ort = SimpleNamespace(InferenceSession=session)
    plan = plan_providers(("tensorrt", "cuda"), [TRT, CUDA, CPU], RuntimeOptions(), MODEL)
    chosen = OrtRunner._first_session(ort, MODEL, None, plan)
    assert chosen.get_providers() == [CPU]
    assert tried == [[TRT, CUDA, CPU], [CUDA, CPU], [CPU]]

    def broken(path: str, sess_options: Any, providers: list[str], provider_options: list[dict[str, str]]) -> Any:
        raise RuntimeError(f"{providers[0]} cannot")

    with pytest.raises(ModelError, match="CPUExecutionProvider cannot"):
        OrtRunner._first_session(SimpleNamespace(InferenceSession=broken), MODEL, None, plan)


@pytest.mark.models
def test_sessions_take_activations_from_the_arena_without_a_memory_pattern() -> None:
    """Memory pattern off by default (25-30 MB less peak RSS in the 4-camera daemon, docs/gate.md)."""
    path = MODELS_DIR / "yunet.edge.onnx"
    if not path.exists():
        pytest.fail("models are not fetched: run `make models`")
    default = OrtRunner(path)._session.get_session_options()
    assert not default.enable_mem_pattern and default.enable_cpu_mem_arena
    assert OrtRunner(path, RuntimeOptions(memory_pattern=True))._session.get_session_options().enable_mem_pattern


@pytest.mark.models
def test_asking_for_gpus_on_a_cpu_build_runs_on_cpu_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    path = MODELS_DIR / "yunet.edge.onnx"
    if not path.exists():
        pytest.fail("models are not fetched: run `make models`")
    with caplog.at_level(logging.WARNING, logger="edge.models.runner"):
        runner = OrtRunner(path, RuntimeOptions(providers=("tensorrt", "cuda", "cpu")))
    assert runner.provider == CPU and runner.providers == (CPU,)
    assert chosen_providers()["yunet.edge.onnx"] == CPU
    assert any("not available" in r.getMessage() for r in caplog.records)
    assert any("runs on CPUExecutionProvider, not TensorrtExecutionProvider" in r.getMessage() for r in caplog.records)


@pytest.mark.models
def test_models_warmup_runs_every_model_and_reports_where(capsys: pytest.CaptureFixture[str]) -> None:
    if not (MODELS_DIR / "sface.edge.onnx").exists():
        pytest.fail("models are not fetched: run `make models`")
    assert main(["models", "warmup", "--models-dir", str(MODELS_DIR), "--size", "320x240",
                 "--providers", "cuda,cpu"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    for step in ("face: detect", "face: embed batch 1", "plate: detect", "plate: recognise"):
        assert step in out
    assert "320x240" in out
    for model in ("yunet.edge.onnx", "sface.edge.onnx", "clp_det.onnx", "ppocr_rec.edge.onnx"):
        assert f"{model}" in out and "runs on CPUExecutionProvider" in out
    assert "do not run on cuda" in captured.err
    with pytest.raises(SystemExit):
        main(["models", "warmup", "--size", "huge"])
