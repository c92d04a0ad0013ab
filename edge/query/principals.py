"""Who may query: a TOML file of principals (token → name, role, officer), readable by its owner only.

    [[principal]]
    name = "officer-0042"        # shown in the audit log; MQTT requests name it
    role = "police"              # installer | police | platform
    officer = "0042"             # the officer the principal is bound to: required for police
    token = "…64 hex digits…"    # bearer token (HTTP, CLI); optional when verify_key is given
    verify_key = "…64 hex…"      # Ed25519 public key that signs this principal's MQTT requests

Generate a token with `python -c "import secrets; print(secrets.token_hex(32))"`; a signing key pair
with `edge.query.mqtt_rr.generate_signing_key()`. Gateways hold only the public half: the platform's
private key never leaves the district (issue 12).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, SecretStr, ValidationError, model_validator

from edge.compat import tomllib
from edge.configbase import StrictModel
from edge.errors import ConfigError, KeyFileError
from edge.keys import resolve_secret_path
from edge.principals import DOOR_ROLES, PrincipalRegistry, Role
from edge.query.model import Principal

_MAX_FILE_BYTES = 1 << 20


class PrincipalEntry(StrictModel):
    """One `[[principal]]` of the tokens file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
    role: Role
    officer: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
    token: SecretStr | None = Field(default=None, min_length=32, max_length=512)
    verify_key: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    """Ed25519 public key (hex) of the principal's MQTT request signatures."""

    @model_validator(mode="after")
    def _bound(self) -> PrincipalEntry:
        if self.token is None and self.verify_key is None:
            raise ValueError("a principal needs a token, a verify_key or both")
        if self.role not in DOOR_ROLES:
            raise ValueError(f"role {self.role.value} is a console role: the query door takes "
                             f"{', '.join(sorted(r.value for r in DOOR_ROLES))}")
        if self.role is Role.POLICE and self.officer is None:
            # The audit's "who" and the per-officer limit must never be whatever a request claims.
            raise ValueError("a police principal must name its officer")
        return self


class PrincipalsFile(StrictModel):
    """The whole tokens file."""

    principal: tuple[PrincipalEntry, ...] = ()


def _digest(token: str) -> bytes:
    return hashlib.sha256(b"edgegw/query-token/v1\0" + token.encode("utf-8")).digest()


class Principals:
    """Looks callers up by bearer token (HTTP, CLI) or by name (MQTT, whose requests prove the token)."""

    def __init__(self, entries: Sequence[PrincipalEntry], registry: PrincipalRegistry | None = None) -> None:
        # The shared registry (edge.principals): a principal an admin revoked there is refused here
        # from the next request on, although its token is still in the file.
        self._registry = registry
        self._by_digest: dict[bytes, Principal] = {}
        self._by_name: dict[str, tuple[Principal, str | None]] = {}
        self._verify: dict[str, Ed25519PublicKey] = {}
        for e in entries:
            token = e.token.get_secret_value() if e.token is not None else None
            principal = Principal(e.name, e.role, e.officer)
            if e.name in self._by_name:
                raise ConfigError(f"principal name {e.name!r} appears twice in the tokens file")
            if token is not None:
                digest = _digest(token)
                if digest in self._by_digest:
                    raise ConfigError(f"principal {e.name!r} reuses another principal's token")
                self._by_digest[digest] = principal
            if e.verify_key is not None:
                self._verify[e.name] = Ed25519PublicKey.from_public_bytes(bytes.fromhex(e.verify_key))
            self._by_name[e.name] = (principal, token)

    def __len__(self) -> int:
        return len(self._by_name)

    def listing(self) -> list[tuple[str, Role]]:
        """(name, role) of every principal: what the door publishes to the registry (no secret)."""
        return [(p.name, p.role) for p, _ in self._by_name.values()]

    def _live(self, principal: Principal) -> bool:
        return self._registry is None or not self._registry.is_revoked(principal.name)

    def by_token(self, token: str) -> Principal | None:
        """The principal holding `token`, or None."""
        # A keyed-hash lookup: the dictionary compares digests, never the secret itself.
        digest = _digest(token)
        found = self._by_digest.get(digest)
        if found is None:
            return None
        _, secret = self._by_name[found.name]
        if secret is None or not hmac.compare_digest(_digest(secret), digest):
            return None
        return found if self._live(found) else None

    def signer(self, name: str) -> tuple[Principal, Ed25519PublicKey] | None:
        """(principal, its Ed25519 public key) for MQTT request verification, or None."""
        key = self._verify.get(name)
        found = self._by_name.get(name)
        return None if key is None or found is None or not self._live(found[0]) else (found[0], key)


def load_principals(name_or_path: str | os.PathLike[str], registry: PrincipalRegistry | None = None) -> Principals:
    """Read and validate a tokens file; refuse one that others can read (KeyFileError says how to fix it)."""
    path = resolve_secret_path(name_or_path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"query tokens file {path} is not a regular file")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise KeyFileError(f"query tokens file {path} has mode {stat.S_IMODE(st.st_mode):04o}; it holds "
                               f"secrets and must be readable by its owner only. Fix: chmod 600 {path}")
        if st.st_size > _MAX_FILE_BYTES:
            raise KeyFileError(f"query tokens file {path} is larger than {_MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KeyFileError(f"query tokens file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"query tokens file {path} cannot be read: {exc}") from exc
    try:
        parsed = PrincipalsFile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except ValidationError as exc:
        # Pydantic's message would echo the offending value, which may be a token: name the key only.
        keys = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
        # Our own rules (value_error) carry no input, so their reason can be said.
        rules = sorted({str(err["msg"]).removeprefix("Value error, ") for err in exc.errors()
                        if err["type"] == "value_error"})
        why = f" ({'; '.join(rules)})" if rules else ""
        raise ConfigError(f"{path}: invalid principal entries at: {', '.join(keys)}{why}") from None
    return Principals(parsed.principal, registry)


def read_token_file(path: Path) -> str:
    """An officer's own token from a file readable by its owner only (for the CLI)."""
    try:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise KeyFileError(f"token file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                               f"it must be readable by its owner only. Fix: chmod 600 {path}")
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise KeyFileError(f"token file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"token file {path} cannot be read: {exc}") from exc
    if not token:
        raise KeyFileError(f"token file {path} is empty")
    return token
