"""The race's speed changes keep their outputs: int8 file selection, alignment from the detector's copy,
per-detection arithmetic in plain floats."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench._common import letterbox
from edge.models.config import ModelsConfig, RuntimeOptions
from edge.models.variants import int8_path, runtime_model_path, wants_int8
from edge.pipeline.config import FaceConfig
from edge.vision.align import ARCFACE_TEMPLATE, align_face, similarity_transform
from edge.vision.face_quality import frontalness_score
from edge.vision.faces import FaceAnalyzer
from edge.vision.yunet import YuNet
from tests._models import image, labels, require_faces, runner

MANIFEST = Path(__file__).resolve().parents[1] / "models" / "manifest.toml"


def _models(tmp_path: Path, *, int8: bool) -> Path:
    (tmp_path / "sface.edge.onnx").write_bytes(b"float")
    if int8:
        int8_path(tmp_path, "sface").write_bytes(b"int8")
    return tmp_path


def test_int8_is_asked_for_by_config_and_only_on_cpu() -> None:
    # Off by default: the int8 SFace lost TAR on dark and blurred faces (docs/gate.md).
    assert ModelsConfig().runtime_options().int8_models == () == RuntimeOptions().int8_models
    assert ModelsConfig(sface_int8=True).runtime_options().int8_models == ("sface",)
    assert wants_int8("sface", RuntimeOptions(int8_models=("sface",)))
    assert not wants_int8("yunet", RuntimeOptions(int8_models=("sface",)))
    # GPU providers run QLinearConv node by node on the CPU: the float graph there.
    assert not wants_int8("sface", RuntimeOptions(providers=("cuda", "cpu"), int8_models=("sface",)))


def test_the_int8_file_is_loaded_when_present_else_the_float_one_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edge.models.manifest import load_manifest

    manifest = load_manifest(MANIFEST)
    opts = RuntimeOptions(int8_models=("sface",))
    (tmp_path / "a").mkdir()
    with_int8 = _models(tmp_path / "a", int8=True)
    assert runtime_model_path(with_int8, "sface", opts, manifest).name == "sface.int8.onnx"
    assert runtime_model_path(with_int8, "sface", RuntimeOptions(), manifest).name == "sface.edge.onnx"
    (tmp_path / "b").mkdir()
    without = _models(tmp_path / "b", int8=False)
    with caplog.at_level(logging.WARNING, logger="edge.models.variants"):
        assert runtime_model_path(without, "sface", opts, manifest).name == "sface.edge.onnx"
        assert runtime_model_path(without, "sface", opts, manifest).name == "sface.edge.onnx"
    warned = [r for r in caplog.records if "sface.int8.onnx is missing" in r.getMessage()]
    assert len(warned) == 1  # once per file, not once per camera or call


def test_yunet_hands_alignment_its_copy_only_for_a_whole_factor() -> None:
    yunet = YuNet(max_side=640)
    whole = yunet.preprocess(np.zeros((720, 1280, 3), np.uint8))
    assert whole.shrink_factor == 2 and whole.shrunk is not None and whole.shrunk.shape == (360, 640, 3)
    fractional = yunet.preprocess(np.zeros((1200, 1600, 3), np.uint8))  # 1600 -> 640 is 2.5x
    assert fractional.shrunk is None and fractional.shrink_factor == 1
    small = yunet.preprocess(np.zeros((360, 640, 3), np.uint8))
    assert small.shrunk is None


def test_alignment_from_the_detectors_copy_matches_alignment_from_the_frame() -> None:
    require_faces()
    a = FaceAnalyzer(detector=runner("yunet"), embedder=runner("sface"), max_side=FaceConfig().detect_max_side)
    compared = 0
    for row in labels()[:24]:
        frame = letterbox(np.asarray(image(row["path"]), np.uint8))
        dets, shrunk = a.detect_shrunk(frame)
        assert shrunk is not None and shrunk[1] == 2  # 1280x720 detected at 640x360
        assert [d.box for d in dets] == [d.box for d in a.detect(frame)]
        for d in dets:
            old, new = a.align(frame, d), a.align(frame, d, shrunk)
            compared += 1
            # Both are area-averaged crops of the same face; only the block phase may differ.
            assert float(np.abs(old.astype(np.int16) - new).mean()) < 3.0
            e = a.embed(np.stack([old, new]))
            assert float(e[0] @ e[1]) > 0.97
    assert compared >= 20


def test_plain_float_similarity_and_frontalness_match_the_vector_forms() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        pts = rng.uniform(0, 800, (5, 2))
        m = similarity_transform(pts, ARCFACE_TEMPLATE)
        # The vector form (Umeyama's closed form with numpy), as before.
        sc, dc = pts - pts.mean(0), ARCFACE_TEMPLATE - ARCFACE_TEMPLATE.mean(0)
        n = float((sc**2).sum())
        a = float((sc * dc).sum()) / n
        b = float((sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]).sum()) / n
        rot = np.array([[a, -b], [b, a]])
        ref = np.hstack([rot, (ARCFACE_TEMPLATE.mean(0) - rot @ pts.mean(0))[:, None]])
        assert np.allclose(m, ref, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="NaN"):
        similarity_transform(np.full((5, 2), math.nan), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE)
    frontal = np.array(ARCFACE_TEMPLATE, np.float32)
    assert frontalness_score(frontal) > 0.95
    turned = frontal.copy()
    turned[2, 0] += 15.0  # the nose far off the eyes' midline: strong yaw
    assert frontalness_score(turned) < 0.2


def test_align_face_shrunk_copy_is_ignored_for_small_faces() -> None:
    frame = np.asarray(cv2.GaussianBlur(np.random.default_rng(1).integers(0, 255, (720, 1280, 3), np.uint8),
                                        (5, 5), 2), np.uint8)
    small_face = ARCFACE_TEMPLATE * 0.9 + 300  # scale > 0.5: no pre-shrink at all
    shrunk = (np.asarray(cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA), np.uint8), 2)
    assert np.array_equal(align_face(frame, small_face), align_face(frame, small_face, shrunk=shrunk))


def test_quantize_static_conv_writes_a_runnable_int8_detector(tmp_path: Path) -> None:
    import onnx

    from edge.errors import ModelError
    from edge.models.runner import OrtRunner
    from edge.vision.quantize import quantize_static_conv

    require_faces()
    yunet = YuNet(max_side=FaceConfig().detect_max_side)
    frames = [letterbox(np.asarray(image(row["path"]), np.uint8)) for row in labels()[:6]]
    with pytest.raises(ModelError, match="no calibration inputs"):
        quantize_static_conv(runner("yunet").path, tmp_path / "none.onnx", [])
    path = quantize_static_conv(runner("yunet").path, tmp_path / "yunet.int8.onnx",
                                [yunet.preprocess(f).tensor for f in frames[:4]])
    int8 = FaceAnalyzer(detector=OrtRunner(path, RuntimeOptions(intra_op_threads=1)), embedder=runner("sface"),
                        max_side=FaceConfig().detect_max_side)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "QLinearConv" in ops  # really quantised, not a copy
    assert sum(len(int8.detect(f)) >= 1 for f in frames) >= 5  # still finds the faces


def test_the_table_shows_int8_beside_float_and_the_default() -> None:
    from bench.run import _int8_rows

    rows = _int8_rows({"defaults": {"sface": "fp32", "yunet": "fp32", "clp_det": "fp32"},
                       "sface": {"speedup": 1.46, "embed_int8": {"p50_ms": 11.6}, "embed_fp32": {"p50_ms": 17.2},
                                 "int8_verification": {"tar_at_far_0_1pct": 1.0},
                                 "fp32_verification": {"tar_at_far_0_1pct": 1.0},
                                 "gate_conditions": {"int8": {"30px": {"tar": 0.9}}, "fp32": {"30px": {"tar": 0.95}}}},
                       "yunet": {"skipped": "no video"}})
    assert len(rows) == 1 and "1.46x" in rows[0][3] and rows[0][4] == "default: fp32"
    assert "0.900" in rows[0][1] and "0.950" in rows[0][1]
    assert _int8_rows({"error": "boom"})[0][4] == "boom"
