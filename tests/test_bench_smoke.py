"""The benchmark harness on tiny inputs, so it cannot rot between `make bench` runs. No timing asserts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import run as bench_run
from bench._common import percentiles
from edge.errors import ModelError
from edge.vision.quantize import _Crops, _StridedCrops, int8_path, quantize_sface, quantize_static_conv
from tests._models import models_dir, require_faces

pytestmark = pytest.mark.models


def test_percentiles_are_milliseconds_of_seconds() -> None:
    st = percentiles([0.001 * i for i in range(1, 11)])
    assert st["n"] == 10
    assert st["p50_ms"] == pytest.approx(5.5) and st["p90_ms"] == pytest.approx(9.1)
    assert percentiles([]) == {"p50_ms": None, "p90_ms": None, "n": 0}


def test_missing_peers_give_null_figures_with_reasons_never_numbers() -> None:
    res: dict[str, Any] = {
        "faces": {"speedup_vs_face_recognition": None, "peer": None, "peer_reason": "face_recognition is absent",
                  "ours": {"verification": {"tar_at_far_0_1pct": 1.0}}, "stages": {}},
        "plates": {"skipped": "bench/bench_plates.py is not in this checkout"},
        "pipeline": {"error": "RuntimeError: boom"},
    }
    head = bench_run.headline(res)
    assert head["face_speedup_vs_face_recognition"] is None
    assert head["reasons"]["face_speedup_vs_face_recognition"] == "face_recognition is absent"
    assert head["face_tar_at_far_0_1pct"] == 1.0 and "face_tar_at_far_0_1pct" not in head["reasons"]
    assert head["plate_speedup_vs_agentclpr"] is None and "not in this checkout" in head["reasons"][
        "plate_speedup_vs_agentclpr"]
    assert head["peak_rss_mb"] is None and "boom" in head["reasons"]["peak_rss_mb"]
    assert set(head["stage_latency_ms"]) == set(bench_run.STAGES)
    text = bench_run.table({**res, **head, "env": {"cpus": 2}, "quick": True, "load_avg_start": 0.0,
                            "load_avg_end": 0.0})
    assert "n/a plate_speedup_vs_agentclpr" in text and "face_recognition is absent" in text


def test_harness_runs_faces_and_pipeline_on_tiny_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_faces()
    models_dir()  # skips when the models are not provisioned
    out = tmp_path / "results.json"
    assert bench_run.main(["--quick", "--no-peers", "--only", "faces,pipeline", "--json", str(out)]) == 0
    res = json.loads(out.read_text(encoding="utf-8"))
    for key in ("face_speedup_vs_face_recognition", "plate_speedup_vs_agentclpr", "overhead_pct",
                "static_cpu_pct_per_camera", "peak_rss_mb", "face_tar_at_far_0_1pct", "plate_scene_exact_pct"):
        assert key in res, key
        assert res[key] is not None or key in res["reasons"], key
    faces, pipe = res["faces"], res["pipeline"]
    assert "error" not in faces and "error" not in pipe, (faces.get("error"), pipe.get("error"))
    assert faces["ours"]["faces_found"] >= 1 and faces["peer"] is None
    assert res["reasons"]["face_speedup_vs_face_recognition"].startswith("peers disabled")
    assert res["stage_latency_ms"]["detect"]["n"] == faces["frames"]
    assert pipe["clip"]["frames"] == pipe["clip"]["photos"] * pipe["clip"]["hold_frames"]
    assert pipe["events_committed"] >= 1  # the pipeline really reached the outbox
    assert pipe["static"]["detector_runs"] < pipe["static"]["frames"]  # the gate skipped the static frames
    assert res["peak_rss_mb"] > 50 and "CaptureDaemon" in pipe["rss"]["note"]
    printed = capsys.readouterr().out
    assert "orchestration overhead" in printed and str(out) in printed


def test_quantize_needs_enough_calibration_faces(tmp_path: Path) -> None:
    assert int8_path(tmp_path) == tmp_path / "sface.int8.onnx"
    with pytest.raises(ModelError, match="at least 8"):
        quantize_sface(tmp_path, [np.zeros((112, 112, 3), np.uint8)] * 3)


def test_calibration_reader_feeds_each_batch_once() -> None:
    batches = [np.zeros((1, 3, 112, 112), np.float32), np.ones((1, 3, 112, 112), np.float32)]
    reader = _Crops("data", batches)
    first, second = reader.get_next(), reader.get_next()
    assert first is not None and second is not None
    assert float(second["data"].mean()) == 1.0 and reader.get_next() is None


def test_strided_calibration_reader_reads_only_the_slice_asked_for() -> None:
    # ONNX Runtime's CalibStridedMinMax asks for [start, end) slices in turn and folds each into
    # its histograms, so the percentile calibration holds one crop's activations, not all of them.
    batches = [np.full((1, 3, 112, 112), i, np.float32) for i in range(5)]
    reader = _StridedCrops("data", batches)
    assert len(reader) == 5
    reader.set_range(start_index=2, end_index=4)
    got = [reader.get_next() for _ in range(3)]
    assert [float(g["data"].mean()) for g in got[:2] if g is not None] == [2.0, 3.0] and got[2] is None
    reader.set_range(start_index=4, end_index=9)  # past the end: stops at the last batch
    last = reader.get_next()
    assert last is not None and float(last["data"].mean()) == 4.0 and reader.get_next() is None


def test_an_unknown_calibration_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown calibration"):
        quantize_static_conv(tmp_path / "m.onnx", tmp_path / "q.onnx", [np.zeros((1, 3, 8, 8), np.float32)],
                             calibration="entropy")


def test_percentile_ranges_keep_the_int8_sface_closer_to_float_than_min_max(tmp_path: Path) -> None:
    """Recipe 3's reason (docs/gate.md): min/max ranges stretched by outliers cost embedding fidelity."""
    import onnx

    from edge.models.config import RuntimeOptions
    from edge.models.runner import OrtRunner
    from edge.vision.quantize import RECIPE_KEY, SFACE_INT8_OPS, SFACE_INT8_RECIPE
    from edge.vision.sface import SFace, preprocess
    from tests._models import analyzer, image, labels

    require_faces()
    samples = [analyzer().largest_face_embedding(image(row["path"])) for row in labels()[:24]]
    kept = [s for s in samples if s is not None]
    cal, held = kept[:12], kept[12:]  # calibrate on some faces, compare on the others
    pct = quantize_sface(models_dir(), [s.aligned for s in cal], out=tmp_path / "pct.onnx")
    minmax = quantize_static_conv(models_dir() / "sface.edge.onnx", tmp_path / "minmax.onnx",
                                  [preprocess(s.aligned[None]) for s in cal], SFACE_INT8_OPS)
    meta = {p.key: p.value for p in onnx.load(str(pct)).metadata_props}
    assert meta[RECIPE_KEY] == SFACE_INT8_RECIPE and "percentile" in SFACE_INT8_RECIPE

    def mean_cosine(path: Path) -> float:
        emb = SFace().embed(OrtRunner(path, RuntimeOptions()), np.stack([s.aligned for s in held]))
        return float(np.mean([np.dot(e, s.embedding) for e, s in zip(emb, held, strict=True)]))

    assert mean_cosine(pct) > mean_cosine(minmax)


def test_int8_sface_agrees_with_the_float_model(tmp_path: Path) -> None:
    from edge.models.config import RuntimeOptions
    from edge.models.runner import OrtRunner
    from edge.vision.faces import FaceAnalyzer
    from tests._models import analyzer, image, labels, runner

    require_faces()
    samples = [analyzer().largest_face_embedding(image(row["path"])) for row in labels()[:16]]
    kept = [s for s in samples if s is not None]
    path = quantize_sface(models_dir(), [s.aligned for s in kept], out=tmp_path / "sface.int8.onnx")
    int8 = FaceAnalyzer(models_dir(), detector=runner("yunet"), embedder=OrtRunner(path, RuntimeOptions()))
    emb = int8.embed(np.stack([s.aligned for s in kept]))
    cosines = [float(np.dot(e, s.embedding)) for e, s in zip(emb, kept, strict=True)]
    assert min(cosines) > 0.95, cosines


def test_a_stale_int8_sface_is_not_current(tmp_path: Path) -> None:
    """`edgegw models fetch` re-derives an int8 copy made by another recipe or from another float graph."""
    import onnx

    from edge.vision.quantize import RECIPE_KEY, is_current
    from tests._models import analyzer, image, labels

    require_faces()
    float_graph = models_dir() / "sface.edge.onnx"
    (tmp_path / "sface.edge.onnx").symlink_to(float_graph)
    assert not is_current(tmp_path)  # no int8 copy yet
    samples = [analyzer().largest_face_embedding(image(row["path"])) for row in labels()[:10]]
    path = quantize_sface(models_dir(), [s.aligned for s in samples if s is not None], out=int8_path(tmp_path))
    assert is_current(tmp_path)
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == RECIPE_KEY:
            prop.value = "1: convolutions only"
    onnx.save(model, str(path))
    assert not is_current(tmp_path)


def test_the_console_section_is_in_the_one_table_with_its_targets() -> None:
    run1 = {"capture_cpu_pct_no_console": 4.0, "capture_cpu_pct_console_idle": 4.1, "capture_cpu_pct_idle_again": 4.2,
            "capture_cpu_pct_one_preview_720p_4fps": 6.0, "console_idle_cost_pct_of_a_core": 0.1,
            "preview_cost_pct_of_a_core": 1.85, "console_cpu_pct_idle": 0.5, "console_cpu_pct_streaming": 2.0,
            "preview_fps_delivered": 3.6}
    res: dict[str, Any] = {"console": {**run1, "repeats": 3, "per_run": [run1] * 3, "uptime_start": "up 1 min, load 9",
                                       "uptime_end": "up 7 min, load 10"}}
    head = bench_run.headline(res)
    assert head["console_preview_cost_pct_of_a_core"] == 1.85 and head["console_idle_cost_pct_of_a_core"] == 0.1
    text = bench_run.table({**res, **head, "env": {"cpus": 2}, "quick": False, "load_avg_start": 9.0,
                            "load_avg_end": 10.0})
    row = next(line for line in text.splitlines() if "one preview 720p 4 fps (3.60 fps delivered)" in line)
    assert "1.85 %" in row and "<= 15 %" in row
    assert "<= 15 %" in text and "uptime at start: up 1 min, load 9" in text
    skipped = bench_run.headline({"console": {"error": "RuntimeError: the preview delivered no frame"}})
    assert skipped["console_preview_cost_pct_of_a_core"] is None
    assert "no frame" in skipped["reasons"]["console_preview_cost_pct_of_a_core"]
