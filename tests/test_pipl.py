"""PIPL guard rails: resident face matching needs a card reader at the gate and the deployment's
references; validation names the missing key and exits 2; both ride in the retained status."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.app.config import load_config
from edge.cli import main
from tests.conftest import new_gateway

BASE = """
[face]
resident_matching = true

[[cameras]]
id = "gate1-face"
kind = "fake"
"""
READER = """
[[serial]]
id = "gate1-card"
port = "/dev/ttyUSB0"
format = "rdm6300"
"""
REFS = """
[pipl]
impact_assessment_id = "PIA-2026-017"
signage_ref = "DOC-signage-gate1"
"""


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    cfg = new_gateway(tmp_path)  # provisioned with a valid config first, then the text under test
    cfg.write_text(cfg.read_text() + text)
    capsys.readouterr()
    rc = main(["config", "check", str(cfg)])
    cap = capsys.readouterr()
    return rc, cap.err + cap.out


def test_matching_without_references_names_the_missing_keys(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _check(tmp_path, BASE + READER, capsys)
    assert rc == 2
    assert "pipl.impact_assessment_id" in out and "pipl.signage_ref" in out


def test_matching_without_a_card_reader_at_that_gate_is_refused(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _check(tmp_path, BASE + REFS, capsys)
    assert rc == 2 and "non-biometric alternative at gate 'gate'" in out
    # A reader at another gate does not count.
    gates = ('\n[passages]\ngates = [{ id = "north", sources = ["gate1-face"] }, '
             '{ id = "south", sources = ["gate1-card"] }]\n')
    (tmp_path / "b").mkdir()
    rc, out = _check(tmp_path / "b", BASE + READER + REFS + gates, capsys)
    assert rc == 2 and "gate 'north'" in out and "camera gate1-face" in out


def test_matching_with_everything_in_place_validates_and_rides_in_the_status(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _check(tmp_path, BASE + READER + REFS, capsys)
    assert rc == 0, out
    cfg = load_config(tmp_path / "gw.toml")
    from edge.privacy.pipl import status

    body = status(enabled=cfg.face.resident_matching, pipl=cfg.pipl, card_readers_by_gate=cfg.card_readers_by_gate())
    assert body == {"resident_matching": True, "impact_assessment_id": "PIA-2026-017",
                    "signage_ref": "DOC-signage-gate1", "card_alternatives": {"gate": ["gate1-card"]}}


def test_matching_off_needs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _ = _check(tmp_path, '\n[[cameras]]\nid = "gate1-face"\nkind = "fake"\n', capsys)
    assert rc == 0
