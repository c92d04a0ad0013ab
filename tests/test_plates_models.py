"""The plate path on the real models and real images of ../shared/data/plates.

Default tests read a fixed subset (every 6th scene, every 10th crop, the HyperLPR crops) and bad
frames; the slow test reads all 36 scenes and 300 crops and checks the issue's targets.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edge.cli import main
from edge.models.config import RuntimeOptions
from edge.models.manifest import load_manifest, model_path
from edge.plates.colour import PlateColour, PlateLayout
from edge.plates.grammar import is_valid_plate
from edge.plates.reader import PlateReader, ReaderParams

pytestmark = pytest.mark.models

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PLATES = SHARED_DATA / "plates"
MODELS = ROOT / "models"
PLATE_MODELS = ("clp_det", "ppocr_rec")


def _rows() -> list[dict[str, str]]:
    labels = PLATES / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"plate data not found at {PLATES} (../shared/data beside the repo)")
    with labels.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _kind(kind: str) -> list[dict[str, str]]:
    return [r for r in _rows() if r["kind"] == kind]


@functools.cache
def _reader() -> PlateReader:
    manifest = load_manifest()
    missing = [n for n in PLATE_MODELS if not model_path(MODELS, n, manifest).is_file()]
    if missing:
        raise FileNotFoundError(", ".join(missing))
    return PlateReader(MODELS, RuntimeOptions(intra_op_threads=1), manifest=manifest)


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    try:
        return _reader()
    except FileNotFoundError as exc:
        pytest.skip(f"plate models missing in {MODELS} ({exc}); run `edgegw models fetch`")


def _image(row: dict[str, str]) -> NDArray[np.uint8]:
    image = cv2.imread(str(SHARED_DATA / row["path"]), cv2.IMREAD_COLOR)
    assert image is not None, row["path"]
    return np.asarray(image, np.uint8)


def test_scene_subset_read_exactly(reader: PlateReader) -> None:
    rows = _kind("full_scene")[::6]
    assert len(rows) == 6
    got = []
    for row in rows:
        reads = reader.read(_image(row))
        assert reads, row["path"]
        best = reads[0]
        got.append(best.text == row["plate_text"])
        assert best.valid and is_valid_plate(best.text)
        assert best.corners.shape == (4, 2)
        # Corners (TL, TR, BR, BL) within 7 % of the plate width of the labelled ones (CCPD: BR first).
        # (6 % with proposals at 640; at 384 one of these six plates is at 6.4 %, the median over
        # the 36 scenes 1.44 % against 1.30 %, and every read set equal or better: docs/gate.md.)
        labelled = np.array([[float(v) for v in p.split("&")] for p in row["vertices_rb_lb_lt_rt"].split(";")])
        error = np.linalg.norm(best.corners - labelled[[2, 3, 0, 1]], axis=1).mean()
        assert error < 0.07 * (float(row["x2"]) - float(row["x1"])), row["path"]
        expected = PlateColour.GREEN if row["n_chars"] == "8" else PlateColour.BLUE
        assert best.colour is expected
        assert len(best.char_confidences) == len(best.text)
    assert all(got), got


def test_crop_subset_read(reader: PlateReader) -> None:
    rows = _kind("plate_crop_94x24")[::10]
    hits = 0
    for row in rows:
        read = reader.read_crop(_image(row))
        assert read is not None and is_valid_plate(read.text)
        hits += read.text == row["plate_text"]
    assert hits >= 28, f"{hits}/{len(rows)}"


def test_hyperlpr_crops_text_colour_and_length(reader: PlateReader) -> None:
    for row in _kind("plate_crop"):
        read = reader.read_crop(_image(row))
        assert read is not None
        assert read.text == row["plate_text"]
        assert read.plate_type is PlateLayout.SINGLE
        if row["plate_text"] == "皖KD01833":  # an 8-character green new-energy plate
            assert read.colour is PlateColour.GREEN
        if row["plate_text"] == "冀D5L690":  # the yellow one
            assert read.colour is PlateColour.YELLOW


def _yellow(crop: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """A blue plate's pixels turned into a yellow plate's: dark characters on a yellow ground."""
    inv = 255.0 - cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    inv = (inv - inv.min()) * (255.0 / max(1.0, float(inv.max() - inv.min())))
    return np.clip(np.stack([inv * 0.15, inv * 0.75, inv * 0.95], axis=-1), 0, 255).astype(np.uint8)


def _double_row(crop: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """A yellow double-row plate made from a real single-row crop: 2 characters above, 5 below."""
    big = cv2.resize(_yellow(crop), (440, 112), interpolation=cv2.INTER_CUBIC)
    upper, lower = big[:, : int(440 * 0.27)], big[:, int(440 * 0.30) :]
    plate = np.empty((220, 440, 3), np.uint8)
    plate[:] = np.median(big.reshape(-1, 3), axis=0).astype(np.uint8)
    u = cv2.resize(upper, (int(upper.shape[1] * 80 / 112), 80))
    x0 = (440 - u.shape[1]) // 2
    plate[5:85, x0 : x0 + u.shape[1]] = u
    plate[95:215, 5:435] = cv2.resize(lower, (430, 120))
    return plate


def test_double_row_plates_are_read_as_one_line(reader: PlateReader) -> None:
    rows = _kind("plate_crop_94x24")[5::30]
    hits = 0
    for row in rows:
        read = reader.read_crop(_double_row(_image(row)))
        assert read is not None
        assert read.plate_type is PlateLayout.DOUBLE
        assert read.colour is PlateColour.YELLOW
        hits += read.text == row["plate_text"]
    assert hits >= len(rows) - 2, f"{hits}/{len(rows)}"


def test_bad_frames_never_crash(reader: PlateReader) -> None:
    scene = _image(_kind("full_scene")[0])
    grey = cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(scene, cv2.COLOR_BGR2BGRA)
    for bad in (
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((0, 10), np.uint8),
        np.zeros((5, 5, 3), np.uint8),
        np.zeros((1, 4000, 3), np.uint8),
        np.zeros((720, 1280, 3), np.uint8),
        np.full((720, 1280, 3), 255, np.uint8),
        np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8),
        np.zeros((10, 10, 5), np.uint8),
    ):
        assert not any(r.valid for r in reader.read(bad))
        crop = reader.read_crop(bad)
        assert crop is None or not crop.valid
    assert reader.read_crop(np.zeros((2, 2, 3), np.uint8)) is None
    # Grey, BGRA and float frames are converted, and still read.
    label = _kind("full_scene")[0]["plate_text"]
    assert reader.read(grey)  # found; a grey plate may read differently
    assert [r.text for r in reader.read(bgra)][:1] == [label]
    assert [r.text for r in reader.read(scene.astype(np.float32))][:1] == [label]


def test_noise_is_never_a_valid_plate(reader: PlateReader) -> None:
    """Constrained decoding always spells a plate; the confidence floor keeps guesses unpublished."""
    rng = np.random.default_rng(7)
    for _ in range(10):
        read = reader.read_crop(rng.integers(0, 256, (24, 94, 3), dtype=np.uint8))
        assert read is not None and is_valid_plate(read.text)
        assert not read.valid and read.min_confidence < 0.1


def test_plates_at_the_frame_edge(reader: PlateReader) -> None:
    """Frames cropped so the plate is within 10 px of (or cut by) each edge are read or skipped."""
    row = _kind("full_scene")[0]
    scene = _image(row)
    x1, y1, x2, y2 = (int(float(row[k])) for k in ("x1", "y1", "x2", "y2"))
    frames = {
        "left": scene[:, x1 - 3 :],
        "top": scene[y1 - 3 :, :],
        "right": scene[:, : x2 + 3],
        "bottom": scene[: y2 + 3, :],
        "corner": scene[y1 - 2 : y2 + 2, x1 - 2 : x2 + 2],
        "cut": scene[:, x1 + (x2 - x1) // 3 :],
    }
    read_ok = 0
    for name, frame in frames.items():
        reads = reader.read(np.ascontiguousarray(frame))
        for r in reads:
            h, w = frame.shape[:2]
            assert 0 <= r.box.x1 <= r.box.x2 <= w and 0 <= r.box.y1 <= r.box.y2 <= h, name
        read_ok += bool(reads) and reads[0].text == row["plate_text"]
    assert read_ok >= 4


def test_cli_reads_labelled_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _reader_or_skip()
    rows = _kind("full_scene")[:2]
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "plate_text"])
        w.writeheader()
        for r in rows:
            w.writerow({"path": r["path"], "plate_text": r["plate_text"]})
        w.writerow({"path": "plates/missing.jpg", "plate_text": "皖A00000"})
    assert main(["plates", "read", "--root", str(SHARED_DATA), "--labels", str(labels)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4
    for line, row in zip(lines[:2], rows, strict=True):
        assert line["path"] == row["path"]
        assert line["plates"][0]["text"] == row["plate_text"] and line["match"] is True
        assert set(line["plates"][0]) >= {"text", "confidence", "corners", "colour", "type"}
        assert len(line["plates"][0]["corners"]) == 4
    assert lines[2]["plates"] == [] and "error" in lines[2] and lines[2]["match"] is False
    summary = lines[3]
    assert summary["images"] == 3 and summary["labelled"] == 3 and summary["unreadable"] == 1
    assert summary["exact"] == 2 and summary["accuracy"] == pytest.approx(2 / 3, abs=1e-3)


def test_cli_reads_crops_by_path(capsys: pytest.CaptureFixture[str]) -> None:
    _reader_or_skip()
    row = _kind("plate_crop_94x24")[0]
    assert main(["plates", "read", "--crop", "--root", str(SHARED_DATA), row["path"]]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["plates"][0]["text"] == row["plate_text"]
    assert lines[1]["images"] == 1 and lines[1]["labelled"] == 0 and lines[1]["accuracy"] is None


def _reader_or_skip() -> None:
    try:
        _reader()
    except FileNotFoundError as exc:
        pytest.skip(f"plate models missing in {MODELS} ({exc})")


@pytest.mark.slow
def test_accuracy_on_all_scenes_and_crops(reader: PlateReader) -> None:
    """Issue 3 targets: exact full-plate match ≥ 97 % of the 36 scenes, ≥ 95 % of the 300 crops."""
    scenes = _kind("full_scene")
    best = [reader.read(_image(r)) for r in scenes]
    exact = sum(bool(b) and b[0].text == r["plate_text"] for b, r in zip(best, scenes, strict=True))
    crops = _kind("plate_crop_94x24")
    reads = [reader.read_crop(_image(r)) for r in crops]
    exact_crops = sum(c is not None and c.text == r["plate_text"] for c, r in zip(reads, crops, strict=True))
    print(f"scenes {exact}/{len(scenes)}, crops {exact_crops}/{len(crops)}")
    assert exact / len(scenes) >= 0.97
    assert exact_crops / len(crops) >= 0.95
    # Every published (valid) read must be right more often than not, and wrong reads mostly invalid.
    wrong_valid = sum(
        bool(b) and b[0].valid and b[0].text != r["plate_text"] for b, r in zip(best, scenes, strict=True)
    )
    assert wrong_valid <= 1


def test_clp_rec_second_opinion_reads_crops() -> None:
    """clp_v2_c_rec as a second opinion (by default below 0.6): consulted for every read at threshold 1."""
    _reader_or_skip()
    manifest = load_manifest()
    if not all(model_path(MODELS, n, manifest).is_file() for n in ("clp_rec", "clp_dict")):
        pytest.skip("clp_rec/clp_dict missing; run `edgegw models fetch`")
    both = PlateReader(MODELS, RuntimeOptions(intra_op_threads=1), params=ReaderParams(second_opinion_below=1.0))
    rows = _kind("plate_crop_94x24")[3::50]
    hits = 0
    for row in rows:
        read = both.read_crop(_image(row))
        assert read is not None and is_valid_plate(read.text)
        hits += read.text == row["plate_text"]
    assert hits >= len(rows) - 1


class _Recording:
    """The real clp_det runner, recording the input size of each call."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.sizes: list[tuple[int, int]] = []

    def run(self, inputs: Any) -> Any:
        self.sizes.append((int(inputs.shape[2]), int(inputs.shape[3])))
        return self.runner.run(inputs)


def test_locate_looks_larger_only_when_nothing_is_found(reader: PlateReader) -> None:
    """Proposals at the small long side; each fallback size in turn only while nothing is found."""
    params = ReaderParams()
    assert params.fallback_long_sides, "the test needs fallbacks"
    spy = PlateReader(MODELS, RuntimeOptions(intra_op_threads=1), params=params,
                      detector=_Recording(reader._detector))
    rec = spy._detector
    assert isinstance(rec, _Recording)
    assert params.proposal_long_side is not None and params.detector.long_side is not None
    sizes = (params.proposal_long_side, *params.fallback_long_sides)
    # An empty 1280x720 road: every size is tried, smallest first, once each.
    assert spy.locate(np.full((720, 1280, 3), 90, np.uint8)) == []
    assert [max(s) for s in rec.sizes] == [min(1280, s) for s in sizes]
    # A frame too small to shrink `proposal_min_shrink` times is proposed on at the detector's
    # long side, here its native size, and never upscaled for a fallback.
    rec.sizes.clear()
    small = params.detector.long_side - 40
    assert small < params.proposal_min_shrink * params.proposal_long_side
    assert spy.locate(np.full((small * 9 // 16, small, 3), 90, np.uint8)) == []
    assert [max(s) for s in rec.sizes] == [small]
    # A scene with a plate: found at the proposal size, so no larger whole-frame run follows
    # (the other calls are the plate-scale refinements, on crops).
    rec.sizes.clear()
    scene = _image(_kind("full_scene")[0])
    assert spy.locate(scene)
    assert max(rec.sizes[0]) == params.proposal_long_side
    assert all(max(s) < min(params.fallback_long_sides) for s in rec.sizes[1:])
