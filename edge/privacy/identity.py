"""The gateway's own key pair: one 32-byte seed (a 0600 key file or a systemd credential) gives an X25519
key (epoch keys are wrapped to it) and an Ed25519 key (it signs the published audit head).

Both private keys are derived from the seed with HKDF-SHA256 under separate labels, so one file, one
credential and one backup cover the gateway's identity, and neither key can be computed from the
other. The public half (`GatewayPublic`) is what the district registers: its text form
`edgegw-gw1:<x25519 hex>:<ed25519 hex>` travels by any channel, and its fingerprint is
`edge.keys.key_fingerprint` of both public keys (the one fingerprint format of the project).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.errors import KeyFileError
from edge.keys import generate_key_file, key_fingerprint, load_secret

_PUBLIC_RE = re.compile(r"edgegw-gw1:([0-9a-f]{64}):([0-9a-f]{64})")
_SALT = b"edgegw/gateway-identity/v1"
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw


def _derive(seed: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=label).derive(seed)


@dataclass(frozen=True, slots=True)
class GatewayPublic:
    """A gateway's public keys: X25519 (to wrap epoch keys to) and Ed25519 (to check its signatures)."""

    x25519: bytes
    ed25519: bytes

    @property
    def fingerprint(self) -> str:
        """The key fingerprint of both public keys (16 hex digits, as `edgegw keys fingerprint` prints)."""
        return key_fingerprint(self.x25519 + self.ed25519, domain="gateway")

    def text(self) -> str:
        """`edgegw-gw1:<x25519 hex>:<ed25519 hex>`, for registration at the district's key service."""
        return f"edgegw-gw1:{self.x25519.hex()}:{self.ed25519.hex()}"

    @classmethod
    def parse(cls, text: str) -> GatewayPublic:
        """Parse `text()`'s form; KeyFileError with the expected shape otherwise."""
        m = _PUBLIC_RE.fullmatch(text.strip())
        if m is None:
            raise KeyFileError("a gateway public key is edgegw-gw1:<64 hex digits>:<64 hex digits>")
        return cls(bytes.fromhex(m.group(1)), bytes.fromhex(m.group(2)))

    def x25519_key(self) -> X25519PublicKey:
        """The X25519 public key object."""
        return X25519PublicKey.from_public_bytes(self.x25519)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether `signature` is this gateway's Ed25519 signature of `message`."""
        try:
            Ed25519PublicKey.from_public_bytes(self.ed25519).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class GatewayIdentity:
    """The gateway's private keys, derived from its seed; never printed, never logged."""

    __slots__ = ("_ed", "_x", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) < 32:
            raise KeyFileError("a gateway identity seed must be at least 32 bytes")
        self._x = X25519PrivateKey.from_private_bytes(_derive(seed, b"x25519"))
        self._ed = Ed25519PrivateKey.from_private_bytes(_derive(seed, b"ed25519"))
        self.public = GatewayPublic(self._x.public_key().public_bytes(_RAW, _RAW_PUB),
                                    self._ed.public_key().public_bytes(_RAW, _RAW_PUB))

    def __repr__(self) -> str:
        return f"GatewayIdentity({self.public.fingerprint})"

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str], base_dir: Path | None = None) -> GatewayIdentity:
        """Load the seed from a 0600 key file or a systemd credential (`edge.keys.load_secret`)."""
        return cls(load_secret(name_or_path, purpose="gateway identity", base_dir=base_dir))

    @classmethod
    def generate(cls, path: Path, *, force: bool = False) -> GatewayIdentity:
        """Create a new seed file (mode 0600, one hex line) and return the identity."""
        return cls(generate_key_file(path, 32, force=force))

    def exchange(self, peer: X25519PublicKey) -> bytes:
        """The X25519 shared secret with `peer` (an ephemeral key of the key service)."""
        return self._x.exchange(peer)

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature of `message`."""
        return self._ed.sign(message)


_HEAD_DOMAIN = b"edgegw/audit-head/v1\n"


def audit_head_message(gateway: str, seq: int, digest: str, ts: float) -> bytes:
    """The bytes an audit head signature covers: domain, then canonical JSON of gateway, seq, hash and ts."""
    body = json.dumps({"gateway": gateway, "hash": digest, "seq": seq, "ts": ts}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True)
    return _HEAD_DOMAIN + body.encode("ascii")


def sign_audit_head(identity: GatewayIdentity, gateway: str, seq: int, digest: str, ts: float) -> dict[str, object]:
    """The signed head for the retained status: seq, hash, ts, the signer's fingerprint and the signature."""
    sig = identity.sign(audit_head_message(gateway, seq, digest, ts))
    return {"seq": seq, "hash": digest, "ts": ts, "signer": identity.public.fingerprint, "sig": sig.hex()}


def verify_audit_head(public: GatewayPublic, gateway: str, head: dict[str, object]) -> bool:
    """Whether a published audit head was signed by this gateway (the platform's check)."""
    try:
        seq, digest, ts, sig = head["seq"], head["hash"], head["ts"], head["sig"]
        if not isinstance(seq, int) or not isinstance(digest, str) or not isinstance(ts, int | float) \
                or not isinstance(sig, str):
            return False
        return public.verify(bytes.fromhex(sig), audit_head_message(gateway, seq, digest, float(ts)))
    except (KeyError, ValueError):
        return False
