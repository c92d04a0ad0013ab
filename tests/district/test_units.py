"""The district's systemd units pass `systemd-analyze verify` and run the platform's own commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNITS = sorted((ROOT / "systemd" / "district").glob("*.service")) + sorted(
    (ROOT / "systemd" / "district").glob("*.timer"))


def test_units_run_district_commands_as_their_own_user() -> None:
    names = {u.name for u in UNITS}
    assert {"edgegw-district-ingest@.service", "edgegw-district-api.service", "edgegw-district-migrate.service",
            "edgegw-district-retention.service", "edgegw-district-retention.timer"} <= names
    for unit in UNITS:
        text = unit.read_text()
        if unit.suffix == ".service":
            assert "-m district " in text and "User=edgegw-district" in text and "NoNewPrivileges=yes" in text


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/edgegw/.venv/bin/python", sys.executable))
    proc = subprocess.run([exe, "verify", *[str(tmp_path / u.name) for u in UNITS]], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
