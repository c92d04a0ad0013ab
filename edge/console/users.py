"""Console users, sessions and the login throttle, in one SQLite file (mode 0600).

Passwords are stored as scrypt hashes (n=2^14, r=8, p=1, a random 16-byte salt each); session
tokens only as SHA-256 digests, so a copy of the file opens no session. The first start creates
`admin` with a random password that must be changed at first login.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError
from edge.principals import CONSOLE_ROLES, PrincipalRegistry, Role  # one role model; console users take CONSOLE_ROLES
from edge.sqlite import connect, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
  name TEXT PRIMARY KEY, role TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,
  must_change INTEGER NOT NULL, created_ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  digest BLOB PRIMARY KEY, name TEXT NOT NULL, csrf TEXT NOT NULL, created_ts REAL NOT NULL,
  expires_ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS login_attempts (client TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_attempts_client ON login_attempts(client, ts);
"""
MIN_PASSWORD = 10
LOGIN_LIMITS: tuple[tuple[int, float], ...] = ((1, 1.0), (5, 60.0), (20, 3600.0))
"""Login attempts per client: at most 1 a second, 5 a minute, 20 an hour."""


class ConsoleAuthError(EdgeError):
    """A login, password change or user operation was refused (the message is safe to show)."""


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in user."""

    name: str
    role: Role
    csrf: str
    must_change: bool

    def may_operate(self) -> bool:
        """Installers and admins may open the preview, the editor and the swipe test."""
        return self.role in (Role.ADMIN, Role.INSTALLER)


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, maxmem=64 * 2**20, dklen=32)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class UserStore:
    """Users, sessions and login attempts."""

    def __init__(self, path: Path, *, session_ttl_s: float = 8 * 3600.0,
                 clock: Callable[[], float] = time.time, registry: PrincipalRegistry | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._db = connect(path)
        self._db.executescript(_SCHEMA)
        self._ttl = session_ttl_s
        self._clock = clock
        # The gateway's one registry (edge.principals): a revoked user can neither log in nor keep a session.
        self._registry = registry
        self.publish()

    def _revoked(self, name: str) -> bool:
        return self._registry is not None and self._registry.is_revoked(name)

    def publish(self) -> None:
        """List the users (names and roles) in the shared registry, for the admin's one view."""
        if self._registry is not None:
            self._registry.publish("console", self.users())

    def users(self) -> list[tuple[str, Role]]:
        """(name, role) of every console user."""
        return [(str(n), Role(r)) for n, r in self._db.execute("SELECT name, role FROM users ORDER BY name")]

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    # -- users --------------------------------------------------------------------------------------
    def first_boot(self) -> str | None:
        """Create `admin` with a random password if there is no user yet; return that password once."""
        if self._db.execute("SELECT 1 FROM users LIMIT 1").fetchone():
            return None
        password = secrets.token_urlsafe(12)
        self.add("admin", Role.ADMIN, password, must_change=True)
        return password

    def add(self, name: str, role: Role, password: str, *, must_change: bool = True) -> None:
        """Add a user (ConsoleAuthError if the name is taken or the password too short)."""
        if role not in CONSOLE_ROLES:
            raise ConsoleAuthError(f"role {role.value} is a query-door role: console users are "
                                   f"{', '.join(sorted(r.value for r in CONSOLE_ROLES))}")
        if not name.isidentifier() or len(name) > 32:
            raise ConsoleAuthError("a user name is letters, digits and _ (up to 32)")
        if len(password) < MIN_PASSWORD:
            raise ConsoleAuthError(f"a password needs at least {MIN_PASSWORD} characters")
        salt = os.urandom(16)
        try:
            with transaction(self._db) as db:
                db.execute("INSERT INTO users VALUES (?,?,?,?,?,?)",
                           (name, role.value, salt, _hash(password, salt), int(must_change), self._clock()))
        except sqlite3.IntegrityError:
            raise ConsoleAuthError(f"user {name} exists") from None
        self.publish()

    def verify(self, name: str, password: str) -> bool:
        """Whether the password is right (constant time; an unknown user costs the same)."""
        row = self._db.execute("SELECT salt, hash FROM users WHERE name = ?", (name,)).fetchone()
        salt, stored = (row[0], row[1]) if row else (b"\0" * 16, b"\0" * 32)
        ok = hmac.compare_digest(_hash(password, salt), stored)
        return ok and row is not None and not self._revoked(name)

    def change_password(self, name: str, old: str, new: str) -> None:
        """Replace a password; ends every other session of the user."""
        if not self.verify(name, old):
            raise ConsoleAuthError("the current password is wrong")
        if len(new) < MIN_PASSWORD:
            raise ConsoleAuthError(f"a password needs at least {MIN_PASSWORD} characters")
        if new == old:
            raise ConsoleAuthError("choose a new password, not the current one")
        salt = os.urandom(16)
        with transaction(self._db) as db:
            db.execute("UPDATE users SET salt = ?, hash = ?, must_change = 0 WHERE name = ?",
                       (salt, _hash(new, salt), name))

    # -- sessions -----------------------------------------------------------------------------------
    def open_session(self, name: str) -> str:
        """A new session token for `name` (to be set as an HttpOnly cookie)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with transaction(self._db) as db:
            db.execute("DELETE FROM sessions WHERE expires_ts < ?", (now,))
            db.execute("INSERT INTO sessions VALUES (?,?,?,?,?)",
                       (_digest(token), name, secrets.token_urlsafe(24), now, now + self._ttl))
        return token

    def session(self, token: str | None) -> Session | None:
        """The live session for a cookie value, or None."""
        if not token:
            return None
        row = self._db.execute(
            "SELECT s.name, u.role, s.csrf, u.must_change FROM sessions s JOIN users u ON u.name = s.name "
            "WHERE s.digest = ? AND s.expires_ts > ?", (_digest(token), self._clock())).fetchone()
        if row is None or self._revoked(str(row[0])):
            return None
        return Session(str(row[0]), Role(row[1]), str(row[2]), bool(row[3]))

    def close_session(self, token: str | None) -> None:
        """Log out."""
        if token:
            with transaction(self._db) as db:
                db.execute("DELETE FROM sessions WHERE digest = ?", (_digest(token),))

    # -- the login throttle -------------------------------------------------------------------------
    def login_allowed(self, client: str) -> float:
        """0.0 if `client` may try to log in now (and count the try), else seconds to wait."""
        now = self._clock()
        with transaction(self._db) as db:
            db.execute("DELETE FROM login_attempts WHERE ts < ?", (now - LOGIN_LIMITS[-1][1],))
            for limit, window in LOGIN_LIMITS:
                rows = db.execute("SELECT ts FROM login_attempts WHERE client = ? AND ts > ? ORDER BY ts",
                                  (client, now - window)).fetchall()
                if len(rows) >= limit:
                    return max(0.1, float(rows[len(rows) - limit][0]) + window - now)
            db.execute("INSERT INTO login_attempts VALUES (?, ?)", (client, now))
        return 0.0
