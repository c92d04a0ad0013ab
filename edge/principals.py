"""One role model and one principal registry for every door of the gateway.

Who may do what on a gateway comes through two doors: the installer's console (users with passwords,
sessions in cookies) and the query door (bearer tokens and signing keys in the query daemon's tokens
file). Their secrets stay where they are — the console's password hashes in its own database, the
door's tokens in the query daemon's 0600 file — but the principals share one name space, one `Role`
and one registry (a small SQLite file both daemons open through the `edgegw-principals` group):

- each door lists its principals there (names and roles only, never a secret), so an admin sees them all;
- an admin revokes a principal by name there, and both doors refuse it from their next request on:
  the console ends its sessions and refuses its password, the query door refuses its token and its
  signed MQTT requests. Restoring it is as explicit, and both are audited by whoever does them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.compat import StrEnum
from edge.configbase import StrictModel
from edge.errors import EdgeError
from edge.sqlite import connect, transaction


class Role(StrEnum):
    """Every role on a gateway; each door accepts its own subset."""

    ADMIN = "admin"
    """Console: everything, including users and revocations."""
    INSTALLER = "installer"
    """Console: preview, editors, swipe test; query door: range queries for commissioning."""
    VIEWER = "viewer"
    """Console: dashboard, checks, events; never the preview or the editors."""
    POLICE = "police"
    """Query door: identifying queries, bound to an officer."""
    PLATFORM = "platform"
    """Query door: the district platform's aggregate queries."""


CONSOLE_ROLES = frozenset({Role.ADMIN, Role.INSTALLER, Role.VIEWER})
DOOR_ROLES = frozenset({Role.INSTALLER, Role.POLICE, Role.PLATFORM})


class PrincipalsConfig(StrictModel):
    """`[principals]`: where the shared registry lives (relative to gateway.data_dir)."""

    registry: Path = Path("principals/registry.db")


class RegistryError(EdgeError):
    """The registry refused an operation (the message is safe to show)."""


@dataclass(frozen=True, slots=True)
class Listed:
    """A principal as the registry knows it: which door holds it, its role, whether it is revoked."""

    name: str
    door: str  # "console" or "query"
    role: Role
    revoked: bool
    revoked_by: str | None = None
    revoked_ts: float | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS principals (
  name TEXT NOT NULL, door TEXT NOT NULL, role TEXT NOT NULL, listed_ts REAL NOT NULL, PRIMARY KEY (name, door));
CREATE TABLE IF NOT EXISTS revoked (name TEXT PRIMARY KEY, by TEXT NOT NULL, ts REAL NOT NULL);
"""


class PrincipalRegistry:
    """The shared registry: the doors' principal lists and the revocations that bind them all."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = connect(path)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise RegistryError(f"principal registry {path} cannot be opened: {exc}") from exc
        self._clock = clock

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def publish(self, door: str, principals: Iterable[tuple[str, Role]]) -> None:
        """Replace `door`'s list (names and roles; no secret ever comes here)."""
        now = self._clock()
        with transaction(self._db) as db:
            db.execute("DELETE FROM principals WHERE door = ?", (door,))
            db.executemany("INSERT INTO principals VALUES (?,?,?,?)",
                           [(name, door, Role(role).value, now) for name, role in principals])

    def is_revoked(self, name: str) -> bool:
        """Whether `name` is revoked (checked on every request by both doors: one indexed read)."""
        return self._db.execute("SELECT 1 FROM revoked WHERE name = ?", (name,)).fetchone() is not None

    def revoke(self, name: str, by: str) -> None:
        """Revoke `name` everywhere (RegistryError if no door lists it or it is revoked already)."""
        with transaction(self._db) as db:
            if db.execute("SELECT 1 FROM principals WHERE name = ?", (name,)).fetchone() is None:
                raise RegistryError(f"no door lists a principal named {name!r}")
            if db.execute("SELECT 1 FROM revoked WHERE name = ?", (name,)).fetchone() is not None:
                raise RegistryError(f"{name} is revoked already")
            db.execute("INSERT INTO revoked VALUES (?,?,?)", (name, by, self._clock()))

    def restore(self, name: str) -> None:
        """Lift a revocation (RegistryError if `name` is not revoked)."""
        with transaction(self._db) as db:
            if db.execute("DELETE FROM revoked WHERE name = ?", (name,)).rowcount == 0:
                raise RegistryError(f"{name} is not revoked")

    def listed(self) -> list[Listed]:
        """Every principal of every door, with its revocation (revocations of names no door lists too)."""
        rows = self._db.execute(
            "SELECT p.name, p.door, p.role, r.by, r.ts FROM principals p LEFT JOIN revoked r ON r.name = p.name "
            "ORDER BY p.door, p.name").fetchall()
        return [Listed(str(n), str(d), Role(role), by is not None, by, ts) for n, d, role, by, ts in rows]
