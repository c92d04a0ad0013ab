"""`edgegw demo` end to end: real models on real photos, both daemons, a real broker, a subscriber."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests._gateway import demo_config
from tests.conftest import MODELS_DIR, ROOT


@pytest.mark.models
@pytest.mark.parametrize("broker", ["auto", "embedded"])
def test_demo_prints_every_event_as_received_and_exits_0(tmp_path: Path, broker: str) -> None:
    if not (MODELS_DIR / "yunet.edge.onnx").exists():
        pytest.fail("models are not fetched: run `make models`")
    cfg = demo_config(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "demo", "--config", str(cfg), "--broker", broker],
                          capture_output=True,
                          text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    faces = [e for e in events if e["kind"] == "face_passage"]
    cards = [e for e in events if e["kind"] == "card_swipe"]
    passages = [e for e in events if e["kind"] == "passage"]
    assert len(faces) == 4, proc.stdout
    assert [e["attrs"]["matched"] for e in faces] == [True, False, True, False]
    residents = [e["subject"]["pseudonym"] for e in faces if e["attrs"]["matched"]]
    assert len(set(residents)) == 2  # two different residents, each under a pseudonym
    assert all(e["subject"]["type"] == "unknown_face" and "pseudonym" not in e["subject"]
               for e in faces if not e["attrs"]["matched"])
    assert [e["seq"] for e in faces] == [1, 2, 3, 4]
    # Each resident swipes as their face passes; face and card fuse into one passage linking both.
    assert 1 <= len(cards) <= 2 and len(passages) == len(cards), proc.stdout
    assert len({c["subject"]["pseudonym"] for c in cards}) == len(cards)
    by_id = {e["event_id"]: e for e in events}
    for passage in passages:
        members = sorted(by_id[i]["kind"] for i in passage["links"])
        assert members == ["card_swipe", "face_passage"]
        assert passage["attrs"]["direction"] == "in"
    for raw in ("resident-0001", "resident-0002", "0A1B2C3D01", "0a1b2c3d01"):
        assert raw not in proc.stdout and raw not in proc.stderr
    assert f"{len(events)} received by the subscriber" in proc.stderr
    # After the events, a summary a person can read: who came, what fused, why no direction.
    summary = [line for line in proc.stdout.splitlines() if line.startswith("# ")]
    assert summary and summary[0].startswith(f"# summary: {len(events)} event(s): 2 resident face passage(s) "
                                             "(2 different resident(s)), 2 unknown visitor(s)"), summary
    assert f"{len(cards)} card swipe(s), {len(passages)} fused passage(s)" in summary[0]
    assert any('faces have direction "none": no gate line is configured' in line for line in summary), summary
    assert ("MQTT 3.1.1" if broker == "embedded" else "on 127.0.0.1") in proc.stderr
