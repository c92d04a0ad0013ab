"""The shipped systemd units pass `systemd-analyze verify` and keep the properties we rely on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNITS = sorted((ROOT / "systemd").glob("*.service"))


def test_units_exist_and_declare_notify_watchdog_and_credentials() -> None:
    names = {u.name for u in UNITS}
    assert names == {"edgegw-capture.service", "edgegw-uplink.service", "edgegw-query.service"}
    for unit in UNITS:
        text = unit.read_text()
        assert "Type=notify" in text and "WatchdogSec=" in text  # the query unit too (issue 12)
        assert "User=edgegw" in text and "NoNewPrivileges=yes" in text
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


HARDENING = ("ProtectProc=invisible", "ProcSubset=pid", "PrivateMounts=yes", "RemoveIPC=yes",
             "IPAddressDeny=any", "IPAddressAllow=localhost", "SystemCallFilter=~@privileged @resources")
MAX_EXPOSURE = 1.5


def test_units_carry_the_hardening_directives() -> None:
    for unit in UNITS:
        lines = unit.read_text().splitlines()
        for directive in HARDENING:
            assert directive in lines, f"{unit.name} lacks {directive}"
        # The allow-list filter must not let the privileged or resource groups back in.
        filters = [ln for ln in lines if ln.startswith("SystemCallFilter=") and not ln.startswith("SystemCallFilter=~")]
        assert filters == ["SystemCallFilter=@system-service"], filters


def test_systemd_analyze_exposure_is_at_most_1_5() -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    for unit in UNITS:
        proc = subprocess.run([exe, "security", "--offline=true", "--no-pager", str(unit)],
                              capture_output=True, text=True)
        found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout + proc.stderr)
        assert found is not None, proc.stdout + proc.stderr
        assert float(found.group(1)) <= MAX_EXPOSURE, f"{unit.name}: exposure {found.group(1)}"
