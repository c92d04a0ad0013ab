"""The gate benchmark's own parts, fast: seeded degradations, the peer venv's loud failure, headlines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import bench_gate, gate_sets, peers
from bench import run as bench_run


def _scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)


def test_degradations_are_seeded_and_change_the_image() -> None:
    a = gate_sets.degrade(_scene(), np.random.default_rng(5))
    b = gate_sets.degrade(_scene(), np.random.default_rng(5))
    c = gate_sets.degrade(_scene(), np.random.default_rng(6))
    assert a.steps and a.steps == b.steps and np.array_equal(a.image, b.image)
    assert a.image.shape == _scene().shape and not np.array_equal(a.image, _scene())
    assert a.steps != c.steps or not np.array_equal(a.image, c.image)
    assert gate_sets.letterboxed_720p(_scene()).shape == (720, 1280, 3)
    assert gate_sets.plate_width_in_720p((1160, 720, 3), 100, 200) == pytest.approx(100 * 720 / 1160)


def test_each_degradation_keeps_the_shape() -> None:
    img = _scene()
    rng = np.random.default_rng(1)
    for out in (gate_sets.motion_blur(img, 7, 30), gate_sets.jpeg(img, 30), gate_sets.down_up(img, 80),
                gate_sets.tilt(img, 8), gate_sets.low_light(img, 0.5, 1.5, 5, rng)):
        assert out.shape == img.shape and out.dtype == np.uint8
    assert float(gate_sets.low_light(img, 0.5, 1.5, 0, rng).mean()) < float(img.mean())


def test_a_missing_peer_fails_loudly_without_install(tmp_path: Path) -> None:
    with pytest.raises(peers.PeerMissingError, match="not importable"):
        peers.load("agentclpr", install_missing=False, venv=tmp_path / "empty-venv")


def test_harness_refuses_to_race_without_its_peer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def missing(name: str, *, install_missing: bool = True, venv: Path = peers.PEER_VENV) -> None:
        raise peers.PeerMissingError(f"{name} is not importable (test)")

    monkeypatch.setattr(peers, "load", missing)
    rc = bench_run.main(["--only", "plates", "--no-install", "--json", str(tmp_path / "r.json")])
    assert rc == 2 and not (tmp_path / "r.json").exists()
    assert "FAILED before measuring: agentclpr is not importable" in capsys.readouterr().err


def test_repeated_runs_report_medians() -> None:
    runs = iter([{"speedup": 4.0, "ours": {"exact": 30}}, {"speedup": 9.0}, {"speedup": 5.0}])
    out = bench_run._repeated("plates", lambda: next(runs), lambda: next(runs), 3)
    assert out["repeats"]["median"]["speedup"] == 5.0 and out["repeats"]["runs"] == 3
    assert bench_run.headline({"plates": out})["plate_speedup_vs_agentclpr"] == 5.0


def test_gate_headline_tolerates_missing_parts() -> None:
    head = bench_gate.headline({"plates": {"skipped": "no data"}, "faces": {"error": "x"}, "latency": {}})
    assert head["plates_720p_exact"] is None and head["faces_false_accepts_gated"] == 0
