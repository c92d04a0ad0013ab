"""`edgegw demo` end to end: real models on real photos, both daemons, a real broker, a subscriber."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR, ROOT


@pytest.mark.models
@pytest.mark.parametrize("broker", ["auto", "embedded"])
def test_demo_prints_every_event_as_received_and_exits_0(tmp_path: Path, broker: str) -> None:
    if not (MODELS_DIR / "yunet.edge.onnx").exists():
        pytest.fail("models are not fetched: run `make models`")
    text = (ROOT / "config" / "demo.toml").read_text()
    text = text.replace('data_dir = "../var/demo"', f'data_dir = "{tmp_path / "data"}"')
    text = text.replace('dir = "../models"', f'dir = "{MODELS_DIR}"')
    text = text.replace('path = "../var/demo/clip"', f'path = "{tmp_path / "data" / "clip"}"')
    cfg = tmp_path / "demo.toml"
    cfg.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "demo", "--config", str(cfg), "--broker", broker],
                          capture_output=True,
                          text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert len(events) == 4, proc.stdout
    assert [e["kind"] for e in events] == ["face_passage"] * 4
    assert [e["attrs"]["matched"] for e in events] == [True, False, True, False]
    residents = [e["subject"]["pseudonym"] for e in events if e["attrs"]["matched"]]
    assert len(set(residents)) == 2  # two different residents, each under a pseudonym
    assert all(e["subject"]["type"] == "unknown_face" and "pseudonym" not in e["subject"]
               for e in events if not e["attrs"]["matched"])
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    for raw in ("resident-0001", "resident-0002"):
        assert raw not in proc.stdout and raw not in proc.stderr
    assert "4 received by the subscriber" in proc.stderr
    assert ("MQTT 3.1.1" if broker == "embedded" else "on 127.0.0.1") in proc.stderr
