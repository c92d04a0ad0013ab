"""`python -m district viid run | register-test | status` as processes, against the mock upper platform."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.district._viid_mock import MockViid
from tests.district.conftest import Database
from tests.district.test_viid import DEVICE, PASSWORD, wait_for


@pytest.fixture
def mock() -> Iterator[MockViid]:
    m = MockViid({DEVICE: PASSWORD}, free_port()).start()
    yield m
    m.close()


def _config(tmp: Path, url: str, *, password: str = PASSWORD) -> Path:
    (tmp / "viid.password").write_text(password + "\n")
    (tmp / "viid.password").chmod(0o600)
    p = tmp / "district.toml"
    p.write_text(f'[viid]\nserver_url = "{url}"\ndevice_id = "{DEVICE}"\npassword_file = "{tmp / "viid.password"}"\n'
                 f'keepalive_s = 0.5\ntick_s = 0.1\nport = {free_port()}\n')
    return p


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "district", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_register_test_prints_codes_and_the_clock_offset(tmp_path: Path, mock: MockViid) -> None:
    mock.state.skew_s = 5.0
    r = _run("viid", "register-test", "--config", str(_config(tmp_path, mock.url)))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["register"] == out["keepalive"] == out["unregister"] == "0"
    assert 4.0 <= out["time_offset_s"] <= 6.5
    assert mock.state.registrations == mock.state.unregistrations == 1
    r = _run("viid", "register-test", "--config", str(_config(tmp_path, mock.url, password="nope")))
    assert r.returncode == 1 and "401 after the digest challenge" in json.loads(r.stdout)["refused"]


def test_a_bad_viid_section_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[viid]\ndevice_id = "31010000002000000001"\nkeepalive_misses = 0\n')
    r = _run("viid", "status", "--config", str(p))
    assert r.returncode == 2
    assert "bad.toml: viid.keepalive_misses" in r.stderr and "(line 3)" in r.stderr


def test_viid_run_registers_keeps_alive_and_unregisters_on_sigterm(tmp_path: Path, pg: Database,
                                                                   mock: MockViid) -> None:
    cfg = _config(tmp_path, mock.url)
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "district", "viid", "run", "--config", str(cfg), "--dsn", pg.dsn],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: mock.state.requests.count(("POST", "/VIID/System/Keepalive", 200)) >= 2, 30, "keepalives")
        r = _run("viid", "status", "--config", str(cfg), "--dsn", pg.dsn)
        assert r.returncode == 0, r.stderr
        state = json.loads(r.stdout)["state"]
        assert state["registered"] is True and state["registrations"] == 1 and "time_offset_s" in state
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()
    assert mock.state.unregistrations == 1
    time.sleep(0.1)
    state = json.loads(_run("viid", "status", "--config", str(cfg), "--dsn", pg.dsn).stdout)["state"]
    assert state["registered"] is False
