"""`edgegw faces score`: verification metrics and the command over real image pairs."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.cli import faces as cli_faces
from edge.errors import ConfigError
from edge.vision.evaluate import equal_error_rate, score_pairs, tar_at_far
from edge.vision.faces import FaceAnalyzer
from tests._models import SHARED_DATA, models_dir, pairs, require_faces


def test_tar_at_far_allows_at_most_the_target_share_of_impostors() -> None:
    impostor = np.linspace(0.0, 0.5, 1000)
    genuine = np.array([0.45, 0.6, 0.7, np.nan])  # a pair with no face is never accepted
    op = tar_at_far(genuine, impostor, 0.001)
    assert op.threshold == pytest.approx(impostor[-2])  # one impostor (0.5) may pass
    assert op.far == pytest.approx(0.001) and op.tar == pytest.approx(0.5)
    strict = tar_at_far(genuine, impostor, 0.0)
    assert strict.threshold == pytest.approx(0.5) and strict.far == 0.0 and strict.tar == pytest.approx(0.5)
    loose = tar_at_far(genuine, impostor, 0.5)
    assert loose.far <= 0.5 and loose.tar == pytest.approx(0.75)


def test_equal_error_rate() -> None:
    eer = equal_error_rate(np.array([0.6, 0.7, 0.8, 0.9]), np.array([0.1, 0.2, 0.3, 0.65]))
    assert eer.eer == pytest.approx(0.25) and eer.threshold == pytest.approx(0.65)
    perfect = equal_error_rate(np.array([0.8, 0.9]), np.array([0.1, 0.2]))
    assert perfect.eer == 0.0 and 0.2 < (perfect.threshold or 0) <= 0.8
    assert math.isnan(equal_error_rate(np.array([]), np.array([0.1])).eer)


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_faces.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    rc: int = args.func(args)
    return rc


def _write_pairs(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = ("path1", "path2", "same")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _lines(out: str) -> tuple[list[dict[str, object]], dict[str, object]]:
    objs = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert objs[-1].get("summary") is True
    return objs[:-1], objs[-1]


@pytest.mark.models
def test_score_separates_genuine_from_impostor_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [r for r in pairs() if r["source_repo"] in ("ageitgey/face_recognition", "cmusatyalab/openface")]
    csv_path = _write_pairs(tmp_path / "pairs.csv", rows)
    rc = _run("faces", "score", "--pairs", str(csv_path), "--root", str(SHARED_DATA), "--models-dir", str(models_dir()))
    assert rc == 0
    lines, summary = _lines(capsys.readouterr().out)
    assert len(lines) == len(rows) == summary["n_pairs"]
    assert all(set(line) == {"path1", "path2", "score", "detected1", "detected2"} for line in lines)
    assert [(line["path1"], line["path2"]) for line in lines] == [(r["path1"], r["path2"]) for r in rows]
    assert all(line["detected1"] and line["detected2"] for line in lines)
    genuine = [float(str(line["score"])) for line, r in zip(lines, rows, strict=True) if r["same"] == "1"]
    impostor = [float(str(line["score"])) for line, r in zip(lines, rows, strict=True) if r["same"] == "0"]
    assert min(genuine) > max(impostor)
    assert summary["genuine"] == len(genuine) and summary["impostor"] == len(impostor)
    assert summary["tar_at_far"] == 1.0 and summary["eer"] == 0.0
    # Fewer than 1000 impostors: FAR ≤ 0.1 % allows none, so the threshold is the best impostor score.
    assert summary["threshold"] == pytest.approx(max(impostor), abs=1e-6)
    # One embedding per distinct image, not per pair.
    assert summary["n_images"] == len({r["path1"] for r in rows} | {r["path2"] for r in rows})


@pytest.mark.models
def test_score_handles_webp_rgba_unreadable_and_faceless_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_faces()
    root = tmp_path / "root"
    for rel in (
        "faces/deepface/deepface_p03/img47.webp",
        "faces/deepface/deepface_p03/img48.jpg",
        "faces/face_recognition/alex_lacamoire/alex-lacamoire.png",
        "faces/compreface/multi/017_0.jpg",
    ):
        src = SHARED_DATA / rel
        if not src.is_file():
            pytest.skip(f"{src} missing")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / rel)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    rows = [
        {"path1": "faces/deepface/deepface_p03/img47.webp", "path2": "faces/deepface/deepface_p03/img48.jpg"},
        {"path1": "faces/face_recognition/alex_lacamoire/alex-lacamoire.png", "path2": "broken.jpg"},
        {"path1": "faces/compreface/multi/017_0.jpg", "path2": "faces/deepface/deepface_p03/img47.webp"},
    ]
    csv_path = _write_pairs(tmp_path / "p.csv", rows, ("path1", "path2"))
    assert _run("faces", "score", "--pairs", str(csv_path), "--root", str(root), "--models-dir", str(models_dir())) == 0
    lines, summary = _lines(capsys.readouterr().out)
    assert lines[0]["detected1"] and lines[0]["detected2"] and float(str(lines[0]["score"])) > 0.363
    assert lines[1] == {**lines[1], "detected1": True, "detected2": False, "score": None}
    assert lines[2]["detected1"] is False and lines[2]["score"] is None
    assert summary["unreadable"] == 1 and summary["no_face"] == 1 and summary["n_scored"] == 1
    assert "tar_at_far" not in summary  # no `same` column, no verification figures


def test_score_rejects_a_csv_without_the_path_columns(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    analyzer = FaceAnalyzer(detector=_Unused(), embedder=_Unused())
    with pytest.raises(ConfigError, match="missing column"):
        score_pairs(analyzer, bad, tmp_path, 0.001, io.StringIO())


class _Unused:
    """A runner that must not be called."""

    input_names = ("x",)
    output_names = ("y",)

    def run(self, inputs: object) -> list[np.ndarray]:
        raise AssertionError("no model should run for a malformed CSV")
