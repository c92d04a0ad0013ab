"""Graph fixes: the derived YuNet/SFace compute what the originals compute, only more flexibly and faster."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from edge.errors import ModelError
from edge.models.fixes import FIXES, apply_fixes, dynamic_hw, prelu_as_dwconv, prelu_as_relu
from edge.models.manifest import KNOWN_FIXES
from edge.models.runner import OrtRunner
from edge.vision.align import align_face
from edge.vision.sface import l2_normalize, preprocess
from edge.vision.yunet import STRIDES, YuNet
from tests._models import ONE_THREAD, analyzer, face_manifest, image, models_dir, original_runner, runner

pytestmark = pytest.mark.models

FACE_IMAGES = (
    "faces/face_recognition/obama/obama.jpg",
    "faces/face_recognition/biden/biden.jpg",
    "faces/compreface/multi/000_5.jpg",
    "faces/deepface/angelina_jolie/img2.jpg",
)


def _letterbox(img: NDArray[np.uint8], h: int, w: int) -> NDArray[np.float32]:
    """Resize to fit h x w (keeping aspect), zero-pad right/bottom, as a YuNet NCHW tensor."""
    f = min(h / img.shape[0], w / img.shape[1])
    small = cv2.resize(img, (int(img.shape[1] * f), int(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
    out = np.zeros((1, 3, h, w), np.float32)
    out[0, :, : small.shape[0], : small.shape[1]] = small.transpose(2, 0, 1)
    return out


def _graph(name: str) -> onnx.ModelProto:
    return onnx.load(str(models_dir() / face_manifest().get(name).runtime_file))


def test_fix_registry_matches_manifest_names() -> None:
    assert set(FIXES) == KNOWN_FIXES


def test_derived_graphs_have_the_fixes_applied() -> None:
    yunet = _graph("yunet")
    dims = [d.dim_param or d.dim_value for d in yunet.graph.input[0].type.tensor_type.shape.dim]
    assert dims[:2] == [1, 3] and all(isinstance(d, str) for d in dims[2:])
    assert all(
        isinstance(o.type.tensor_type.shape.dim[1].dim_param, str) and o.type.tensor_type.shape.dim[1].dim_param
        for o in yunet.graph.output
    )
    sface = _graph("sface")
    assert [i.name for i in sface.graph.input] == ["data"], "weights must no longer be graph inputs"
    assert sface.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert sface.graph.output[0].type.tensor_type.shape.dim[0].dim_param
    ops = {n.op_type for n in sface.graph.node}
    assert "PRelu" not in ops and {"Relu", "Sub", "Mul", "Add"} <= ops


def test_yunet_derived_matches_original_at_640() -> None:
    for rel in FACE_IMAGES[:3]:
        x = _letterbox(image(rel), 640, 640)
        orig = original_runner("yunet").run(x)
        derived = runner("yunet").run(x)
        assert runner("yunet").output_names == original_runner("yunet").output_names
        for a, b in zip(orig, derived, strict=True):
            assert a.shape == b.shape
            assert float(np.abs(a - b).max()) < 1e-4


@pytest.mark.parametrize(("h", "w"), [(480, 640), (736, 1280)])
def test_yunet_derived_runs_at_other_sizes_and_finds_the_same_faces(h: int, w: int) -> None:
    img = image("faces/compreface/multi/000_5.jpg")
    x = _letterbox(img, h, w)
    outs = dict(zip(runner("yunet").output_names, runner("yunet").run(x), strict=True))
    for s in STRIDES:
        assert outs[f"cls_{s}"].shape[1] == (h // s) * (w // s)
    # The 640x640 original and the derived model at this size agree on where the 5 faces are.
    f = min(h / img.shape[0], w / img.shape[1])
    yunet = YuNet()
    dets = yunet.postprocess(outs, yunet.preprocess(np.zeros((h, w, 3), np.uint8)))
    x640 = _letterbox(img, 640, 640)
    f640 = min(640 / img.shape[0], 640 / img.shape[1])
    ref_outs = dict(zip(original_runner("yunet").output_names, original_runner("yunet").run(x640), strict=True))
    ref = yunet.postprocess(ref_outs, yunet.preprocess(np.zeros((640, 640, 3), np.uint8)))
    assert len(dets) == len(ref) == 5
    for r in ref:
        rc = np.array(r.box.centre) / f640
        best = min(float(np.hypot(*(np.array(d.box.centre) / f - rc))) for d in dets)
        assert best < 0.1 * r.box.width / f640


def _aligned_faces() -> NDArray[np.uint8]:
    crops = []
    for rel in FACE_IMAGES:
        img = image(rel)
        sample = analyzer().largest_face_embedding(img)
        assert sample is not None, rel
        crops.append(align_face(img, sample.detection.keypoints))
    return np.stack(crops)


def test_sface_derived_matches_original_on_real_faces_in_a_batch() -> None:
    crops = _aligned_faces()
    x = preprocess(crops)
    orig = np.concatenate([original_runner("sface").run(x[i : i + 1])[0] for i in range(len(x))])
    derived3 = runner("sface").run(x[:3])[0]
    assert derived3.shape == (3, 128)
    assert float(np.abs(orig[:3] - derived3).max()) < 1e-4
    derived_all = runner("sface").run(x)[0]
    cos = np.sum(l2_normalize(orig) * l2_normalize(derived_all), axis=1)
    assert float(cos.min()) > 0.9999
    # Different people stay different: this is not a constant output.
    assert float(np.dot(l2_normalize(derived_all[0]), l2_normalize(derived_all[1]))) < 0.5


def _prelu_model(slopes: NDArray[np.float32]) -> onnx.ModelProto:
    c = slopes.shape[0]
    node = helper.make_node("PRelu", ["x", "slope"], ["y"], name="p")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", c, 4, 4])],
        [numpy_helper.from_array(slopes.reshape(c, 1, 1), "slope")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


@pytest.mark.parametrize("fix", ["prelu-as-relu", "prelu-as-dwconv"])
def test_prelu_rewrite_is_exact_for_negative_and_large_slopes(tmp_path: Path, fix: str) -> None:
    slopes = np.array([-0.81, 0.0, 0.25, 1.0, 1.12], np.float32)
    model = _prelu_model(slopes)
    orig_path, fixed_path = tmp_path / "p.onnx", tmp_path / "p.edge.onnx"
    orig_path.write_bytes(model.SerializeToString())
    fixed_path.write_bytes(apply_fixes(model.SerializeToString(), [fix]))
    assert "PRelu" not in {n.op_type for n in onnx.load(str(fixed_path)).graph.node}
    x = np.random.default_rng(1).normal(size=(2, 5, 4, 4)).astype(np.float32)
    want = OrtRunner(orig_path, ONE_THREAD).run(x)[0]
    got = OrtRunner(fixed_path, ONE_THREAD).run(x)[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    # The tempting max(x, a·x) is wrong for a < 0 and a > 1, which SFace has.
    wrong = np.maximum(x, slopes.reshape(1, 5, 1, 1) * x)
    assert float(np.abs(wrong - want).max()) > 0.1


def test_sface_slopes_need_the_exact_rewrite() -> None:
    model = onnx.load(str(models_dir() / face_manifest().get("sface").file))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    slopes = np.concatenate([inits[n.input[1]].ravel() for n in model.graph.node if n.op_type == "PRelu"])
    assert slopes.min() < 0 and slopes.max() > 1


def test_fixes_refuse_models_they_do_not_fit() -> None:
    with pytest.raises(ModelError, match="NCHW"):
        dynamic_hw(onnx.ModelProto())
    model = _prelu_model(np.array([0.5], np.float32))
    prelu_as_relu(model)
    with pytest.raises(ModelError, match="no PRelu"):
        prelu_as_relu(model)
    with pytest.raises(ModelError, match="no PRelu"):
        prelu_as_dwconv(model)
    shared = _prelu_model(np.array([0.5, 0.2], np.float32))  # one slope broadcast to every channel
    shared.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(0.5, np.float32), "slope"))
    with pytest.raises(ModelError, match="not per channel"):
        prelu_as_dwconv(shared)
    with pytest.raises(ModelError, match="cannot parse"):
        apply_fixes(b"not an onnx model", ["dynamic-hw"])


def test_derivation_is_deterministic() -> None:
    spec = face_manifest().get("yunet")
    data = (models_dir() / spec.file).read_bytes()
    assert apply_fixes(data, spec.fixes) == apply_fixes(data, spec.fixes)


@pytest.mark.slow
def test_sface_derived_is_faster_on_one_thread() -> None:
    x = preprocess(_aligned_faces()[:1])

    def median_ms(r: OrtRunner) -> float:
        for _ in range(3):
            r.run(x)
        times = []
        for _ in range(30):
            t = time.perf_counter()
            r.run(x)
            times.append(time.perf_counter() - t)
        return 1000 * float(np.median(times))

    before, after = median_ms(original_runner("sface")), median_ms(runner("sface"))
    assert after < 0.8 * before, (before, after)
