"""A PostgreSQL server of our own (initdb in a temporary directory, a free port) for outage tests.

The machine's PostgreSQL is never stopped: a test that takes the database away takes away this one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.conftest import free_port

# The newest server installed (Debian: /usr/lib/postgresql/<major>/bin).
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name),
             default=Path("/usr/lib/postgresql/15/bin"))


class OwnPostgres:
    """`start()`, `stop(mode)` (immediate = crash), `restart()`; `dsn` for the `edgegw` database in it."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError("PostgreSQL server binaries are not installed (apt-get install postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="edgegw-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self.port = free_port()
        self._user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
        if self._user:
            shutil.chown(self.root, self._user)
            shutil.chown(self.sock, self._user)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.sock}'\n"
                    "fsync = on\nshared_buffers = 64MB\nmax_connections = 40\n")
        self.dsn_server = f"host=127.0.0.1 port={self.port} user=postgres"
        self.dsn = f"{self.dsn_server} dbname=edgegw"

    def _run(self, *cmd: str) -> None:
        full = ["runuser", "-u", self._user, "--", *cmd] if self._user else list(cmd)
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start")

    def create_database(self) -> None:
        """Create the `edgegw` database."""
        with psycopg.connect(f"{self.dsn_server} dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE edgegw")

    def stop(self, mode: str = "immediate") -> None:
        """Stop; `immediate` is a crash (no checkpoint; recovery on the next start)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """A fast restart: every connection is cut."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "restart", "-l",
                  str(self.root / "log"))

    def close(self) -> None:
        """Stop (if running) and remove everything."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)
