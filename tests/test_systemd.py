"""The shipped systemd units pass `systemd-analyze verify` and keep the properties we rely on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNITS = sorted((ROOT / "systemd").glob("*.service"))


def test_units_exist_and_declare_notify_watchdog_and_credentials() -> None:
    names = {u.name for u in UNITS}
    assert names == {"edgegw-capture.service", "edgegw-uplink.service", "edgegw-query.service",
                     "edgegw-console.service"}
    for unit in UNITS:
        text = unit.read_text()
        if unit.name != "edgegw-query.service":
            assert "Type=notify" in text and "WatchdogSec=" in text
        assert "User=edgegw" in text and "NoNewPrivileges=yes" in text
        if unit.name != "edgegw-console.service":  # the console holds no key
            assert "LoadCredential=" in text
    capture = (ROOT / "systemd" / "edgegw-capture.service").read_text()
    assert "DeviceAllow=char-video4linux rw" in capture and "DeviceAllow=char-ttyUSB rw" in capture
    assert "SupplementaryGroups=video dialout" in capture


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    edgegw = Path(sys.executable).with_name("edgegw")
    for unit in UNITS:
        # Point ExecStart at this checkout's console script: verify checks that it is executable.
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/edgegw/.venv/bin/edgegw", str(edgegw)))
    proc = subprocess.run([exe, "verify", *[str(tmp_path / u.name) for u in UNITS]], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
