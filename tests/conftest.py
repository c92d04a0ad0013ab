"""Shared fixtures: a real mosquitto on a free loopback port, key files, a privacy-leak collector."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MODELS_DIR = ROOT / "models"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    """GET `url` (5 s timeout): the status and the body, an HTTP error's too (a 404 or 503 is an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Broker:
    """A mosquitto process owned by a test."""

    host: str
    port: int
    conf: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) mosquitto on the same port and wait until it accepts connections."""
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"mosquitto exited: {err}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        """Kill the broker (abruptly, like a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def _mosquitto_available() -> bool:
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto on a free port, MQTT 5 and 3.1.1, anonymous, in-memory."""
    if not _mosquitto_available():
        pytest.fail("mosquitto is not installed: run `make test` (it installs it) or apt-get install mosquitto")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nmax_inflight_messages 0\n")
    b = Broker("127.0.0.1", port, conf)
    b.start()
    yield b
    b.stop()


def new_gateway(tmp_path: Path, sections: str = "") -> Path:
    """A gateway under `tmp_path`: data dir with a fresh 0600 data key and gateway identity, its epoch
    keys issued by the real key service from a stand-in district root key (`data/district.key`, which
    the gateway's config never names) and imported; gw.toml's [gateway] section points there, followed
    by `sections` (more TOML). Returns the config path."""
    from edge.keys import generate_key_file

    data = tmp_path / "data"
    data.mkdir()
    generate_key_file(data / "data.key")
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[gateway]\ndistrict = "d1"\ncommunity = "c1"\ngateway = "g1"\ndata_dir = "{data}"\n\n{sections}')
    provision(cfg, data / "district.key")
    return cfg


def provision(cfg_path: Path, root_key_file: Path, window_days: float | None = None) -> None:
    """Issue and import the gateway's epoch keys from a stand-in district root key (created if missing)."""
    from edge.app.config import load_config
    from edge.app.provision import provision_epoch_keys

    provision_epoch_keys(load_config(cfg_path), root_key_file, window_days=window_days)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A 0600 district key file with 32 random bytes (hex)."""
    p = tmp_path / "district.key"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    return p


class _ErrorCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture(autouse=True)
def _fail_on_logged_exception(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test that logged an unexpected exception (opt out with @pytest.mark.allow_logged_errors)."""
    catcher = _ErrorCatcher()
    logging.getLogger().addHandler(catcher)
    yield
    logging.getLogger().removeHandler(catcher)
    if catcher.records and request.node.get_closest_marker("allow_logged_errors") is None:
        msgs = "; ".join(r.getMessage() for r in catcher.records)
        pytest.fail(f"unexpected exception logged: {msgs}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Scan every payload the session's subscribers received for any raw identifier a test used."""
    from tests._events import RAW
    from tests._mqtt import ALL_PAYLOADS, RAW_IDENTIFIERS

    forms: set[str] = set()
    for value in set(RAW.values()) | RAW_IDENTIFIERS:
        forms |= {value, value.lower(), value.upper(), value.replace("·", ""), value.replace(":", ""),
                  value.replace(":", "").lower()}
    leaks = {f for f in forms if len(f) >= 4 for p in ALL_PAYLOADS if f in p.decode("utf-8", "replace")}
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nPRIVACY: {len(leaks)} raw identifier form(s) appeared in published payloads", file=sys.stderr)
    elif ALL_PAYLOADS:
        print(f"\nprivacy scan: {len(ALL_PAYLOADS)} published payload(s) checked, no raw identifier found",
              file=sys.stderr)
