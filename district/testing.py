"""Throwaway infrastructure for tests and the benchmark: a database created and dropped, a mosquitto on a
free port, ingest workers as processes. Never touches the machine's own services beyond creating and
dropping its own `edgegw_<purpose>_<random>` database on the configured server."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from district.db import migrate

SERVER_DSN = os.environ.get("EDGEGW_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def scratch_database(purpose: str = "bench", server_dsn: str = SERVER_DSN) -> Iterator[str]:
    """Create `edgegw_<purpose>_<random>`, migrate it, yield its DSN, drop it."""
    name = f"edgegw_{purpose}_{secrets.token_hex(4)}"
    with psycopg.connect(f"{server_dsn} dbname=postgres", autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    dsn = f"{server_dsn} dbname={name}"
    try:
        migrate(dsn)
        yield dsn
    finally:
        with psycopg.connect(f"{server_dsn} dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@contextlib.contextmanager
def mosquitto(tmp: Path, port: int | None = None) -> Iterator[int]:
    """A mosquitto on a free loopback port (in memory, large queues); yields the port."""
    port = port or free_port()
    conf = tmp / f"mosquitto-{port}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 1000000\nmax_inflight_messages 0\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(5)


def start_worker(dsn: str, port: int, client_id: str, log_path: Path, *,
                 config: Path | None = None) -> subprocess.Popen[bytes]:
    """`python -m district ingest` as a process, logging to `log_path`."""
    args = [sys.executable, "-m", "district", "ingest", "--dsn", dsn, "--mqtt-port", str(port),
            "--client-id", client_id]
    if config is not None:
        args += ["--config", str(config)]
    with log_path.open("ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=log, cwd=Path(__file__).resolve().parents[1])
