"""`edgegw check`: the commissioning checklist against real keys, models, a pty, a camera, a broker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.cli import main
from tests.conftest import MODELS_DIR, Broker, new_gateway

pytestmark = pytest.mark.models


def _gateway(tmp_path: Path, broker: Broker, port: str) -> Path:
    return new_gateway(tmp_path, f"""
[models]
dir = "{MODELS_DIR}"

[[cameras]]
id = "gate1"
kind = "fake"
width = 640
height = 480

[[serial]]
id = "reader1"
port = "{port}"
format = "rdm6300"

[outbox]
max_mb = 16

[mqtt]
host = "{broker.host}"
port = {broker.port}
""")


def test_every_check_passes_on_a_healthy_gateway(tmp_path: Path, broker: Broker,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    master, slave = os.openpty()
    try:
        cfg = _gateway(tmp_path, broker, os.ttyname(slave))
        capsys.readouterr()
        assert main(["check", "--config", str(cfg)]) == 0
    finally:
        os.close(master)
        os.close(slave)
    out = capsys.readouterr().out
    for name in ("keys", "models", "camera gate1", "serial reader1", "disk", "outbox", "broker"):
        assert f"{name}: ok" in out, out
    assert "first frame 640x480" in out and "all checks passed" in out


def test_failures_are_named_and_explained(tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _gateway(tmp_path, broker, str(tmp_path / "no-such-tty"))
    os.chmod(tmp_path / "data" / "gateway.key", 0o644)
    broker.stop()
    capsys.readouterr()
    assert main(["check", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "keys: FAIL" in out and "chmod 600" in out
    assert "serial reader1: FAIL" in out and "no-such-tty" in out
    assert "broker: FAIL" in out and "connection refused" in out
    assert "camera gate1: ok" in out and "models: ok" in out
    assert "3 check(s) failed" in out


def test_status_shows_what_the_daemons_recorded(tmp_path: Path, broker: Broker,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    cfg = _gateway(tmp_path, broker, str(tmp_path / "unplugged-reader"))
    cfg.write_text(cfg.read_text().replace('kind = "fake"\n', 'kind = "fake"\nframes = 3\n'))
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "capture", "--config", str(cfg), "--exit-when-done"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    capsys.readouterr()
    assert main(["status", "--config", str(cfg), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["cameras"]["gate1"]["state"] == "finished"
    assert body["ports"]["reader1"]["connected"] is False and body["ports"]["reader1"]["last_error"]
    assert body["online"] is False and body["outbox_depth"] == 0
    assert main(["status", "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "camera gate1: finished" in text and "serial reader1: DISCONNECTED" in text
