"""`edgegw demo` on Raspberry Pi-class hardware: every inference slowed down 8x, same events, exit 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests._gateway import demo_config
from tests._slow import scaled, slowed_env
from tests.conftest import MODELS_DIR, ROOT


@pytest.mark.models
def test_demo_at_pi_speed_shows_every_passage_and_exits_0(tmp_path: Path) -> None:
    if not (MODELS_DIR / "yunet.edge.onnx").exists():
        pytest.fail("models are not fetched: run `make models`")
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "demo", "--config", str(demo_config(tmp_path)),
                           "--broker", "auto"], capture_output=True, text=True, timeout=scaled(600), cwd=ROOT,
                          env=slowed_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line)["event"] for line in proc.stdout.splitlines() if line.startswith("{")]
    faces = [e for e in events if e["kind"] == "face_passage"]
    cards = [e for e in events if e["kind"] == "card_swipe"]
    passages = [e for e in events if e["kind"] == "passage"]
    # The same checks as the full-speed demo test: nothing about the result depends on speed.
    assert [e["attrs"]["matched"] for e in faces] == [True, False, True, False], proc.stdout
    assert len({e["subject"]["pseudonym"] for e in faces if e["attrs"]["matched"]}) == 2
    assert [e["seq"] for e in faces] == [1, 2, 3, 4]
    # As in the full-speed test: a resident swipes once their face event reached the subscriber, so
    # on a loaded machine the last swipe can come after the clip (and the gateway) has ended.
    assert 1 <= len(cards) <= 2 and len(passages) == len(cards), proc.stdout + proc.stderr[-2000:]
    by_id = {e["event_id"]: e for e in events}
    for passage in passages:
        assert sorted(by_id[i]["kind"] for i in passage["links"]) == ["card_swipe", "face_passage"]
        assert passage["attrs"]["direction"] == "in"
    # Each resident's card fused with that resident's face, not a passer-by's.
    matched = {e["event_id"] for e in faces if e["attrs"]["matched"]}
    assert all(any(i in matched for i in p["links"]) for p in passages)
    for raw in ("resident-0001", "resident-0002", "0A1B2C3D01", "0a1b2c3d01"):
        assert raw not in proc.stdout and raw not in proc.stderr
    assert f"{len(events)} received by the subscriber" in proc.stderr
