"""bench/gpu_check.py without a GPU: its CPU self-test compares two sessions, and asking for CUDA on a
CPU-only onnxruntime fails plainly with exit 2 (the GPU run itself needs a GPU machine: `make gpu-check`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR, ROOT

pytestmark = pytest.mark.models


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    if not (MODELS_DIR / "yunet.edge.onnx").exists():
        pytest.fail("models are not fetched: run `make models`")
    return subprocess.run([sys.executable, "bench/gpu_check.py", "--models-dir", str(MODELS_DIR), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_self_test_on_cpu_runs_both_paths_and_reports_every_model(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = _check("--provider", "cpu", "--faces", "2", "--plates", "2", "--repeat", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"yunet", "sface", "clp_det", "ppocr_rec"}
    for model in report["models"].values():
        assert model["replayed"] >= 1 and model["max_abs_diff"] == 0.0  # two CPU sessions agree exactly
        assert model["cpu"]["first_call_ms"] is not None
    assert report["faces"] == 2 and report["face_embedding_cosine_min"] == pytest.approx(1.0)
    assert report["verdict"] == "agree" and "agree" in proc.stdout


def test_without_a_cuda_build_it_says_what_to_install_and_exits_2() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the GPU run is `make gpu-check`")
    proc = _check("--provider", "cuda")
    assert proc.returncode == 2
    assert "CUDAExecutionProvider is not in this onnxruntime build" in proc.stderr
    assert "make gpu-check" in proc.stderr
