"""edge.plates.slim: each rewrite on a small graph (same outputs, fewer nodes), and on the shipped
PP-OCRv4 rec with real plate crops (the reader's restricted probabilities and reads unchanged)."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from edge.errors import ModelError
from edge.models.config import RuntimeOptions
from edge.models.fetch import STATE_FILE, fetch, verify
from edge.models.fixes import parse_model
from edge.models.manifest import Manifest, load_manifest
from edge.models.runner import OrtRunner
from edge.plates import slim, slimmed
from edge.plates.ctc import Vocabulary
from edge.plates.reader import PlateReader, ReaderParams
from edge.plates.recognisers import PPOCR_SPEC, ppocr_charset, preprocess_lines

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
PPOCR = MODELS / "ch_PP-OCRv4_rec_infer.onnx"
DERIVED = MODELS / "ppocr_rec.edge.onnx"
PLATES = ROOT.parent / "shared" / "data" / "plates"


def _const(name: str, value: NDArray[np.float32]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value.astype(np.float32), name))


def _block_model(classes: int = 9) -> onnx.ModelProto:
    """PP-OCR's pattern in small: padded depthwise conv, affine, hard-swish, affine, 1x1 conv,
    affine, hard-swish, then a MatMul + Add + Softmax head over `classes`."""
    rng = np.random.default_rng(3)
    c = 4
    nodes = [
        _const("dw_w", rng.normal(size=(c, 1, 3, 3))), _const("dw_b", rng.normal(size=(c,))),
        _const("s1", np.array(0.7)), _const("b1", np.array(0.2)),
        _const("three", np.array(3.0)), _const("zero", np.array(0.0)), _const("six", np.array(6.0)),
        _const("s2", np.array(1.3)), _const("b2", np.array(-0.4)),
        _const("pw_w", rng.normal(size=(c, c, 1, 1))), _const("pw_b", rng.normal(size=(c,))),
        _const("s3", np.array(0.9)), _const("b3", np.array(0.1)),
        _const("fc_w", rng.normal(size=(c * 2, classes))), _const("fc_b", rng.normal(size=(classes,))),
        helper.make_node("Conv", ["x", "dw_w", "dw_b"], ["dw"], group=c, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["s1", "dw"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Add", ["a1", "three"], ["h1"]), helper.make_node("Clip", ["h1", "zero", "six"], ["c1"]),
        helper.make_node("Mul", ["a1", "c1"], ["p1"]), helper.make_node("Div", ["p1", "six"], ["hs1"]),
        helper.make_node("Mul", ["s2", "hs1"], ["m2"]), helper.make_node("Add", ["m2", "b2"], ["a2"]),
        helper.make_node("Conv", ["a2", "pw_w", "pw_b"], ["pw"], kernel_shape=[1, 1]),
        helper.make_node("Mul", ["pw", "s3"], ["m3"]), helper.make_node("Add", ["m3", "b3"], ["a3"]),
        helper.make_node("Add", ["a3", "three"], ["h3"]), helper.make_node("Clip", ["h3", "zero", "six"], ["c3"]),
        helper.make_node("Mul", ["a3", "c3"], ["p3"]), helper.make_node("Div", ["p3", "six"], ["hs3"]),
        # [1, C, 2, 3] -> [1, 3, C*2] (the "time" axis last-but-one, like PP-OCR's head)
        helper.make_node("Reshape", ["hs3", "shape_i"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["t", "fc_w"], ["logits0"]), helper.make_node("Add", ["logits0", "fc_b"], ["lg"]),
        helper.make_node("Softmax", ["lg"], ["probs"], axis=2),
    ]
    nodes.insert(0, helper.make_node("Constant", [], ["shape_i"],
                                     value=numpy_helper.from_array(np.array([1, c * 2, 3], np.int64), "shape_i")))
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 2, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3, classes])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def _run(data: bytes, x: NDArray[np.float32]) -> NDArray[np.float32]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0], np.float32)


def test_each_rewrite_keeps_the_function_on_a_small_graph() -> None:
    model = _block_model()
    before = model.SerializeToString()
    x = np.random.default_rng(0).normal(scale=3.0, size=(1, 4, 2, 3)).astype(np.float32)
    ref = _run(before, x)
    data, done = slim.slim_recogniser(model)
    # Conv+affine twice; the affine after the first hard-swish feeds a 1x1 conv; two hard-swishes.
    assert done == {"conv_affine": 2, "affine_pointwise": 1, "hardswish": 2}
    ops = [n.op_type for n in parse_model(data).graph.node]
    assert ops.count("Clip") == 0 and ops.count("Div") == 0 and ops.count("HardSigmoid") == 2
    np.testing.assert_allclose(_run(data, x), ref, rtol=1e-5, atol=1e-6)


def test_keep_classes_is_the_restricted_renormalised_softmax() -> None:
    keep = [0, 2, 3, 7]
    model = _block_model(classes=9)
    x = np.random.default_rng(1).normal(size=(1, 4, 2, 3)).astype(np.float32)
    full = _run(model.SerializeToString(), x)[0]
    data, done = slim.slim_recogniser(model, keep)
    assert done["classes"] == 4
    got = _run(data, x)[0]
    want = full[:, keep] / full[:, keep].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert [d.dim_value for d in parse_model(data).graph.output[0].type.tensor_type.shape.dim][-1] == 4


def test_an_affine_before_a_padded_conv_is_left_alone() -> None:
    """Folding an affine into a padded conv would shift its zero border, so it stays."""
    model = _block_model()
    pw = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[0] == "a2")
    del pw.attribute[:]
    pw.attribute.extend([helper.make_attribute("kernel_shape", [1, 1]), helper.make_attribute("pads", [1, 1, 1, 1])])
    # Up to the second affine only: the padded conv's 4x5 map no longer fits the head.
    cut = next(i for i, n in enumerate(model.graph.node) if n.output[0] == "a3")
    del model.graph.node[cut + 1:]
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("a3", TensorProto.FLOAT, [1, 4, 4, 5]))
    x = np.random.default_rng(2).normal(size=(1, 4, 2, 3)).astype(np.float32)
    ref = _run(model.SerializeToString(), x)
    data, done = slim.slim_recogniser(model)
    assert done == {"conv_affine": 2, "affine_pointwise": 0, "hardswish": 1}
    np.testing.assert_allclose(_run(data, x), ref, rtol=1e-5, atol=1e-6)


def test_a_model_without_the_classifier_is_refused() -> None:
    model = _block_model()
    model.graph.node.remove(next(n for n in model.graph.node if n.op_type == "Softmax"))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("lg", TensorProto.FLOAT, [1, 3, 9]))
    with pytest.raises(ModelError):
        slim.slim_recogniser(model, [0, 1])
    with pytest.raises(ModelError):
        parse_model(b"not a model")


def _crops(limit: int) -> list[NDArray[np.uint8]]:
    labels = PLATES / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"plate data not found at {PLATES}")
    with labels.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] != "full_scene"]
    out = []
    for r in rows[:: max(1, len(rows) // limit)][:limit]:
        image = cv2.imread(str(PLATES.parent / r["path"]), cv2.IMREAD_COLOR)
        if image is not None:
            out.append(np.asarray(image, np.uint8))
    return out


@pytest.mark.models
def test_the_slimmed_ppocr_gives_the_readers_probabilities() -> None:
    if not PPOCR.is_file():
        pytest.skip("PP-OCRv4 rec not fetched (edgegw models fetch)")
    data = PPOCR.read_bytes()
    shipped = parse_model(data)
    charset = ppocr_charset(slim.metadata(shipped))
    vocab = Vocabulary(charset)
    slimmed, done = slim.slim_recogniser(parse_model(data), vocab.model_index.tolist())
    assert done == {"conv_affine": 28, "affine_pointwise": 12, "hardswish": 28, "classes": vocab.size}
    a = OrtRunner(PPOCR, RuntimeOptions(intra_op_threads=1))
    b = OrtRunner(PPOCR, RuntimeOptions(intra_op_threads=1), model=slimmed)
    assert b.path == PPOCR
    crops = _crops(24)
    for width in (160, 320):
        batch = preprocess_lines(crops, PPOCR_SPEC, [width] * len(crops))
        full = np.asarray(a.run(batch)[0], np.float32)
        cut = np.asarray(b.run(batch)[0], np.float32)
        assert cut.shape == (*full.shape[:2], vocab.size)
        want = np.stack([vocab.restrict(f) for f in full])
        assert float(np.abs(cut - want).max()) < 5e-4  # float rounding: 1.2e-4 at most measured
        assert (cut.argmax(axis=2) == want.argmax(axis=2)).all()


def _require_derived() -> None:
    if not PPOCR.is_file() or not (MODELS / "clp_det.onnx").is_file():
        pytest.skip("plate models not fetched (edgegw models fetch)")
    if not DERIVED.is_file():
        pytest.fail(f"{DERIVED.name} is not derived: run `edgegw models fetch`")


@pytest.mark.models
def test_the_reader_reads_the_same_with_the_slimmed_recogniser() -> None:
    _require_derived()
    opts = RuntimeOptions(intra_op_threads=1)
    shipped = PlateReader(MODELS, opts, params=ReaderParams(slim_recogniser=False))
    slimmed = PlateReader(MODELS, opts)
    assert isinstance(shipped._ppocr.runner, OrtRunner) and isinstance(slimmed._ppocr.runner, OrtRunner)
    assert shipped._ppocr.runner.path == PPOCR and slimmed._ppocr.runner.path == DERIVED
    assert slimmed._ppocr.vocab.chars == shipped._ppocr.vocab.chars
    assert slimmed._ppocr.vocab.size == len(slimmed._ppocr.vocab.model_index)
    for crop in _crops(30):
        a, b = shipped.read_crop(crop), slimmed.read_crop(crop)
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert (a.text, a.valid, a.form) == (b.text, b.valid, b.form)
            np.testing.assert_allclose(a.char_confidences, b.char_confidences, atol=1e-4)


def test_warm_up_runs_each_named_pixel_variant_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader pays OpenCV's one-off LAB table set-up at start-up, not on the first weak plate."""
    from edge.plates import variants

    calls: list[tuple[str, tuple[int, ...]]] = []

    def recorder(name: str) -> Callable[[variants.Line], variants.Line]:
        def run(line: variants.Line) -> variants.Line:
            calls.append((name, line.shape))
            return line
        return run

    monkeypatch.setitem(variants.PIXEL_VARIANTS, "clahe", recorder("clahe"))
    monkeypatch.setitem(variants.PIXEL_VARIANTS, "gamma", recorder("gamma"))
    variants.warm_up(("clahe", "wide", "gamma"))  # "wide" is re-warped by the reader: nothing to warm
    assert calls == [("clahe", (2, 2, 3)), ("gamma", (2, 2, 3))]
    # The real CLAHE on the tiny line works and keeps its shape.
    assert variants.clahe(np.zeros((2, 2, 3), np.uint8)).shape == (2, 2, 3)


@pytest.mark.models
def test_the_derived_file_computes_what_the_load_time_slim_did() -> None:
    """`edgegw models fetch`'s ppocr_rec.edge.onnx against the graph slimmed in memory from the
    shipped file (what the reader ran before): the same probabilities on real plate crops, and its
    metadata holds the kept classes and the recipe."""
    _require_derived()
    shipped = parse_model(PPOCR.read_bytes())
    charset = ppocr_charset(slim.metadata(shipped))
    vocab = Vocabulary(charset)
    in_memory, _ = slim.slim_recogniser(shipped, vocab.model_index.tolist())
    a = OrtRunner(PPOCR, RuntimeOptions(intra_op_threads=1), model=in_memory)
    b = OrtRunner(DERIVED, RuntimeOptions(intra_op_threads=1))
    assert slimmed.kept_classes(b.metadata) == ["<blank>", *vocab.chars]
    assert b.metadata["character"] == slim.metadata(shipped)["character"]
    crops = _crops(24)
    for width in (160, 320):
        batch = preprocess_lines(crops, PPOCR_SPEC, [width] * len(crops))
        np.testing.assert_array_equal(np.asarray(b.run(batch)[0]), np.asarray(a.run(batch)[0]))


def _models_with_plates(tmp_path: Path) -> tuple[Manifest, Path]:
    """A models folder in tmp_path provisioned from the repo's plate files (links), and its manifest."""
    repo = load_manifest()
    names = ("clp_det", "clp_rec", "clp_dict", "ppocr_rec")
    if not all((MODELS / repo.get(n).file).is_file() for n in names):
        pytest.skip("plate models not fetched (edgegw models fetch)")
    lines = []
    for name in names:
        spec = repo.get(name)
        entry = {"name": spec.name, "file": spec.file, "role": spec.role, "source": f"file:{MODELS}",
                 "sha256": spec.sha256, "license": spec.license, "input": spec.input, "fixes": list(spec.fixes)}
        lines += ["[[model]]", *(f"{k} = {json.dumps(v)}" for k, v in entry.items()), ""]
    path = tmp_path / "manifest.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return load_manifest(path), tmp_path / "models"


@pytest.mark.models
def test_fetch_derives_the_slimmed_recogniser_and_again_when_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    manifest, models = _models_with_plates(tmp_path)
    derived = models / "ppocr_rec.edge.onnx"
    results = {r.name: r for r in fetch(manifest, models, progress=False)}
    assert results["ppocr_rec"].derived == derived and results["ppocr_rec"].derived_action == "derived"
    state = json.loads((models / STATE_FILE).read_text(encoding="utf-8"))["files"][derived.name]
    assert state["recipe"] == slimmed.recipe() and state["fixes"] == ["slim-plate-recogniser"]
    assert state["sha256"] == hashlib.sha256(derived.read_bytes()).hexdigest()
    assert derived.read_bytes() == DERIVED.read_bytes()  # deterministic: the repo's copy is the same file
    assert all(s.ok for s in verify(manifest, models))
    assert {r.name: r.derived_action for r in fetch(manifest, models, progress=False)}["ppocr_rec"] == "verified"

    derived.unlink()  # missing
    assert {r.name: r.derived_action for r in fetch(manifest, models, progress=False)}["ppocr_rec"] == "derived"

    # Recorded before the recipe was: derived again.
    state_path = models / STATE_FILE
    data = json.loads(state_path.read_text(encoding="utf-8"))
    del data["files"][derived.name]["recipe"]
    state_path.write_text(json.dumps(data), encoding="utf-8")
    assert {r.name: r.derived_action for r in fetch(manifest, models, progress=False)}["ppocr_rec"] == "derived"

    # Another recipe (the code changed): the reader will not use the old file, `list` says it is not
    # current and `fetch` derives it again with the new recipe in its metadata.
    monkeypatch.setattr(slimmed, "recipe", lambda: "2: changed")
    (status,) = [s for s in verify(manifest, models) if s.name == "ppocr_rec"]
    assert status.derived is not None and not status.derived.verified
    with caplog.at_level(logging.WARNING, logger="edge.plates.reader"):
        stale = PlateReader(models, RuntimeOptions(intra_op_threads=1), manifest=manifest)
    assert isinstance(stale._ppocr.runner, OrtRunner) and stale._ppocr.runner.path == models / PPOCR.name
    assert len(stale._ppocr.vocab.model_index) == stale._ppocr.vocab.size  # the full class list, restricted
    assert "another recipe" in caplog.text
    assert {r.name: r.derived_action for r in fetch(manifest, models, progress=False)}["ppocr_rec"] == "derived"
    fresh = PlateReader(models, RuntimeOptions(intra_op_threads=1), manifest=manifest)
    assert isinstance(fresh._ppocr.runner, OrtRunner) and fresh._ppocr.runner.path == derived
    assert fresh._ppocr.runner.metadata[slimmed.RECIPE_KEY] == "2: changed"

    # Off: the file as shipped, whatever is derived.
    plain = PlateReader(models, RuntimeOptions(intra_op_threads=1), manifest=manifest,
                        params=ReaderParams(slim_recogniser=False))
    assert isinstance(plain._ppocr.runner, OrtRunner) and plain._ppocr.runner.path == models / PPOCR.name


@pytest.mark.models
def test_the_capture_daemon_never_imports_onnx() -> None:
    """The capture process builds every model's session (the plate reader's slimmed PP-OCR too)
    without importing onnx (16 MB resident): the graph was rewritten at fetch time."""
    _require_derived()
    probe = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import edge.app.capture
        from edge.models.config import RuntimeOptions
        from edge.plates.reader import PlateReader
        from edge.vision.faces import FaceAnalyzer
        models = Path({str(MODELS)!r})
        reader = PlateReader(models, RuntimeOptions(intra_op_threads=1))
        FaceAnalyzer(models, RuntimeOptions(intra_op_threads=1))
        assert reader._ppocr.runner.path.name == "ppocr_rec.edge.onnx", reader._ppocr.runner.path
        print(sorted(m for m in sys.modules if m == "onnx" or m.startswith("onnx.")))
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
