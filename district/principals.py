"""Who may call the platform: a TOML file of principals (token → name, role, officer), owner-only.

    [[principal]]
    name = "officer-0042"
    role = "police"              # police: search | auditor: audit, gateway status | admin: all
    officer = "0042"             # optional: binds a personal token to one officer id
    token = "…64 hex digits…"

Only a digest of each token is kept in memory; comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError

from edge.compat import StrEnum, tomllib
from edge.configbase import StrictModel
from edge.errors import ConfigError


class Role(StrEnum):
    """What a principal may do."""

    POLICE = "police"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    role: Role
    officer: str | None = None


class _Entry(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
    role: Role
    officer: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
    token: SecretStr = Field(min_length=32, max_length=512)


class _File(StrictModel):
    principal: tuple[_Entry, ...] = ()


def _digest(token: str) -> bytes:
    return hashlib.sha256(b"edgegw/district-token/v1\0" + token.encode("utf-8")).digest()


class Principals:
    """Looks callers up by bearer token."""

    def __init__(self, entries: dict[str, Principal]) -> None:
        self._by_digest = {_digest(t): p for t, p in entries.items()}

    @classmethod
    def load(cls, path: Path) -> Principals:
        """Read a tokens file; refuses one that others can read."""
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read tokens file {path}: {exc.strerror}") from exc
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(f"tokens file {path} is readable by others; fix: chmod 600 {path}")
        try:
            parsed = _File.model_validate(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, ValidationError) as exc:
            raise ConfigError(f"tokens file {path}: {str(exc).splitlines()[0]}") from None
        return cls({e.token.get_secret_value(): Principal(e.name, e.role, e.officer) for e in parsed.principal})

    def authenticate(self, token: str) -> Principal | None:
        """The principal holding `token`, or None."""
        want = _digest(token)
        found = None
        for digest, principal in self._by_digest.items():
            if hmac.compare_digest(digest, want):
                found = principal
        return found


def write_tokens_file(path: Path, entries: list[tuple[str, Role, str | None, str]]) -> None:
    """Write a 0600 tokens file (name, role, officer, token) — for installers and tests."""
    lines = []
    for name, role, officer, token in entries:
        lines += ["[[principal]]", f'name = "{name}"', f'role = "{role.value}"']
        if officer:
            lines.append(f'officer = "{officer}"')
        lines += [f'token = "{token}"', ""]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
