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
        assert "NoNewPrivileges=yes" in text
        assert "LoadCredentialEncrypted=" in text and "LoadCredential=" not in text
    capture = (ROOT / "systemd" / "edgegw-capture.service").read_text()
    assert "DeviceAllow=char-video4linux rw" in capture and "DeviceAllow=char-ttyUSB rw" in capture
    assert "video dialout" in _directive(capture, "SupplementaryGroups")


def _directive(text: str, name: str) -> str:
    values = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(name + "=")]
    assert len(values) == 1, (name, values)
    return values[0]


def _sysusers() -> tuple[dict[str, set[str]], set[str]]:
    """(user → groups it is a member of, groups) from the shipped sysusers snippet."""
    members: dict[str, set[str]] = {}
    groups: set[str] = set()
    for line in (ROOT / "systemd" / "edgegw.sysusers.conf").read_text().splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if parts[0] == "u":
            members.setdefault(parts[1], set())
        elif parts[0] == "g":
            groups.add(parts[1])
        elif parts[0] == "m":
            members.setdefault(parts[1], set()).add(parts[2])
    return members, groups


def test_each_daemon_runs_as_its_own_user_and_reaches_only_its_meeting_places() -> None:
    members, groups = _sysusers()
    units = {u.name.removeprefix("edgegw-").removesuffix(".service"): u.read_text() for u in UNITS}
    users = set()
    for name, text in units.items():
        user = _directive(text, "User")
        assert user == f"edgegw-{name}"
        users.add(user)
        # The unit's supplementary groups are exactly its sysusers memberships (no drift between them).
        if name == "uplink":  # its one meeting place is its primary group
            assert _directive(text, "Group") == "edgegw-outbox" and "SupplementaryGroups=" not in text
        else:
            assert _directive(text, "Group") == user
            assert set(_directive(text, "SupplementaryGroups").split()) == members[user], name
        # Nothing a daemon creates on its own is readable by another; shared files are pre-created 0660.
        assert _directive(text, "UMask") == "0077"
        assert "StateDirectory=" not in text  # it would chown the shared tree to one daemon
    assert len(users) == 3 and "edgegw-console" in members
    # The attacks of issue 12, as permissions: the capture daemon reaches no query tokens and cannot
    # write the query daemon's private state; the uplink (facing the network) reaches only the outbox
    # and holds no key but its broker password.
    assert members["edgegw-uplink"] == set()
    assert "gateway.key" not in units["uplink"] and "data.key" not in units["uplink"]
    assert "query-tokens" not in units["capture"] and "/var/lib/edgegw/query" not in units["capture"]
    assert "district.key" not in "".join(units.values())  # the root key never reaches a gateway
    dirs = {}
    for line in (ROOT / "systemd" / "edgegw.tmpfiles.conf").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "d":
            dirs[parts[1]] = (parts[2], parts[3], parts[4])
    for path, (mode, _user, group) in dirs.items():
        assert int(mode, 8) & 0o007 == 0 or path == "/var/lib/edgegw", path  # nothing for others
        if int(mode, 8) & 0o070 and group in groups:
            assert mode.startswith("2"), path  # setgid: what is created there belongs to the group
    for name, text in units.items():
        for path in _directive(text, "ReadWritePaths").split():
            assert path in dirs, (name, path)


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
