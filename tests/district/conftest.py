"""District fixtures: a PostgreSQL database per test session (created and dropped), workers as processes.

The server is the machine's PostgreSQL (127.0.0.1:5432, or $EDGEGW_TEST_PG as a libpq DSN without
dbname); the tests only ever create and drop their own `edgegw_test_<random>` database on it.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests._chaos import Proc

SERVER_DSN = os.environ.get("EDGEGW_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")
_TABLES = ("events", "gateways", "seq_runs", "marks", "gaps", "rejects", "gateway_status", "audit_log", "search_grants",
           "gateway_keys", "viid_subscriptions", "viid_outbox", "viid_cursor", "viid_state", "cases",
           "case_history", "watchlists")


@dataclass(frozen=True)
class Database:
    """The session's test database."""

    name: str
    dsn: str

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Run one statement in its own connection and return the rows."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(sql.encode(), params)
            return cur.fetchall() if cur.description else []

    def scalar(self, sql: str, params: tuple[object, ...] = ()) -> object:
        """The first column of the first row."""
        return self.query(sql, params)[0][0]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[Database]:
    """Create `edgegw_test_<random>`, apply the migrations, drop it at the end of the session."""
    from district.db import migrate

    name = f"edgegw_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(f"{SERVER_DSN} dbname=postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"no PostgreSQL at {SERVER_DSN!r} (set EDGEGW_TEST_PG, or run .ci/run, which starts one): {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    db = Database(name, f"{SERVER_DSN} dbname={name}")
    try:
        migrate(db.dsn)
        yield db
    finally:
        with psycopg.connect(f"{SERVER_DSN} dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture
def pg(pg_database: Database) -> Database:
    """The session database, emptied for this test."""
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(_TABLES)}".encode())
    return pg_database


def district_config(tmp: Path, **sections: dict[str, object]) -> Path:
    """A district TOML with fast timings for tests, plus `sections` (table → values)."""
    base: dict[str, dict[str, object]] = {
        "ingest": {"sweep_s": 0.2, "gap_grace_s": 1.0, "replay_interval_s": 2.0},
        "database": {"connect_timeout_s": 2},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    lines = []
    for table, values in base.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
        lines.append("")
    path = tmp / f"district-{time.monotonic_ns()}.toml"
    path.write_text("\n".join(lines).replace("True", "true").replace("False", "false"))
    return path


def worker(cfg: Path, db: Database, port: int, log_dir: Path, *, client_id: str, transport: str = "mqtt",
           extra: tuple[str, ...] = ()) -> Proc:
    """Start `python -m district ingest` as a process."""
    args = [sys.executable, "-m", "district", "-v", "ingest", "--config", str(cfg), "--dsn", db.dsn,
            "--client-id", client_id, "--transport", transport]
    if transport == "mqtt":
        args += ["--mqtt-port", str(port)]
    return Proc([*args, *extra], log_dir / f"worker-{client_id}-{time.monotonic_ns()}.log")
