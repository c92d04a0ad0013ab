"""The gateway registry: the public keys the platform knows for each gateway (table `gateway_keys`).

A gateway is registered at provisioning with the public half of its identity (`edgegw keys init`
prints `edgegw-gw1:<x25519>:<ed25519>`; the Ed25519 key checks the audit heads it signs) and of its
MQTT query door (`edgegw query door-key` prints `D/C/G <x25519 hex>`; district search details are
sealed to it). Only public keys are stored; re-registering replaces them (a re-provisioned gateway).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge.errors import ConfigError
from edge.privacy.identity import GatewayPublic

Conn = psycopg.Connection[tuple[object, ...]]
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HEX32 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class GatewayName:
    """`district/community/gateway`, as topics and query-door recipients name a gateway."""

    district: str
    community: str
    gateway: str

    def __str__(self) -> str:
        return f"{self.district}/{self.community}/{self.gateway}"

    @classmethod
    def parse(cls, text: str) -> GatewayName:
        """Parse `D/C/G`; ConfigError naming the expected form otherwise."""
        parts = text.strip().split("/")
        if len(parts) != 3 or not all(_ID.match(p) for p in parts):
            raise ConfigError(f"a gateway is DISTRICT/COMMUNITY/GATEWAY (letters, digits, _ and -), got {text!r}")
        return cls(*parts)


@dataclass(frozen=True, slots=True)
class GatewayKeys:
    """What the platform knows of one gateway: its identity and (if registered) its door key."""

    name: GatewayName
    identity: GatewayPublic
    door: bytes | None

    def door_key(self) -> X25519PublicKey | None:
        """The query door's X25519 public key object, if registered."""
        return X25519PublicKey.from_public_bytes(self.door) if self.door is not None else None


def parse_door(text: str) -> bytes:
    """A door public key as `edgegw query door-key` prints it (`D/C/G HEX` or bare `HEX`)."""
    value = text.strip().split()[-1].lower() if text.strip() else ""
    if not _HEX32.match(value):
        raise ConfigError("a query door public key is 64 hex digits (what `edgegw query door-key` prints)")
    return bytes.fromhex(value)


def register(conn: Conn, name: GatewayName, identity: GatewayPublic, door: bytes | None) -> None:
    """Insert or replace a gateway's public keys (committed)."""
    conn.execute(
        "INSERT INTO gateway_keys (district, community, gateway, identity_public, door_public) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (district, community, gateway) DO UPDATE SET "
        "identity_public = EXCLUDED.identity_public, door_public = coalesce(EXCLUDED.door_public, "
        "gateway_keys.door_public), registered_at = now()",
        (name.district, name.community, name.gateway, identity.text(), door.hex() if door is not None else None))
    conn.commit()


def load_keys(conn: Conn, names: list[str] | None = None) -> dict[str, GatewayKeys]:
    """The registered gateways (all, or those named `D/C/G`), keyed by `D/C/G`."""
    rows = conn.execute("SELECT district, community, gateway, identity_public, door_public FROM gateway_keys "
                        "ORDER BY 1, 2, 3").fetchall()
    conn.rollback()
    out: dict[str, GatewayKeys] = {}
    for d, c, g, ident, door in rows:
        name = GatewayName(str(d), str(c), str(g))
        if names is not None and str(name) not in names:
            continue
        out[str(name)] = GatewayKeys(name, GatewayPublic.parse(str(ident)),
                                     bytes.fromhex(str(door)) if door is not None else None)
    return out
