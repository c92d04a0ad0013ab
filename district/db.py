"""PostgreSQL connections and versioned migrations (a `schema_migrations` table, one file per version)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from district.errors import DatabaseError

log = logging.getLogger(__name__)

_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any fixed 64-bit number: the advisory lock that serialises concurrent `migrate` runs.
_MIGRATE_LOCK = 0x6564676567770001


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned SQL file shipped in district/migrations."""

    version: int
    name: str
    sql: str


def connect(dsn: str, *, timeout_s: float = 5.0, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection, translating failures into DatabaseError (the message has no password)."""
    try:
        conn: psycopg.Connection[tuple[object, ...]] = psycopg.connect(
            dsn, connect_timeout=max(1, int(timeout_s)), autocommit=autocommit, application_name="edgegw-district")
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL: {_first_line(exc)}") from exc
    return conn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    out = []
    for entry in resources.files("district.migrations").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda mg: mg.version)
    return out


def migrate(dsn: str) -> list[int]:
    """Apply the migrations not applied yet, each in its own transaction; return the versions applied."""
    applied: list[int] = []
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                         "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            done = {int(str(r[0])) for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
            for mg in migrations():
                if mg.version in done:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(mg.sql.encode())
                        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                     (mg.version, mg.name))
                except psycopg.Error as exc:
                    raise DatabaseError(f"migration {mg.version:04d}_{mg.name} failed: {_first_line(exc)}") from exc
                log.info("applied migration %04d_%s", mg.version, mg.name)
                applied.append(mg.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))
    return applied


def schema_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The highest applied migration (0 if none)."""
    try:
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return 0
    return int(str(row[0])) if row else 0
