"""Epoch pseudonym keys: their derivation (district side), the wrapped bundle format, the gateway's store.

The district's root key never leaves its key service. From it the service derives one key per
(identifier kind, epoch) — for resident ids per (community, epoch), so two communities never share a
resident pseudonym — and sends a gateway only the epochs inside its retention window, in a *bundle*
wrapped to the gateway's X25519 key:

    shared   = X25519(ephemeral private, gateway X25519 public)
    wrap key = HKDF-SHA256(shared, salt = "edgegw/epoch-key-wrap/v1" || ephemeral public || gateway public,
                           info = "wrap")
    entry    = AES-256-GCM(wrap key, random 96-bit nonce, epoch key, aad = canonical JSON of the bundle
                           header and the entry's kind, epoch and not_after)

so an entry cannot be moved to another gateway, kind, epoch or expiry, and a stolen store without the
gateway's identity seed opens nothing. The gateway keeps the entries *as wrapped* (`EpochKeyring`,
SQLite with secure_delete) and unwraps into memory only; an entry past its `not_after` (its epoch's
end plus the retention window) is refused and deleted, WAL included, so a gateway stolen today
exposes only the epochs whose data it still holds. Key ids are `<root fingerprint>.<epoch>`, where
the root fingerprint is `edge.keys.key_fingerprint(root key)`: what `edgegw keys generate` printed for
that key, and the format of every other key fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.errors import EdgeError, PrivacyError
from edge.keys import key_fingerprint
from edge.privacy.identity import GatewayIdentity, GatewayPublic
from edge.sqlite import connect, transaction
from edge.types import IdKind

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "edgegw-epoch-keys/v1"
_PSEUDONYM_SALT = b"edgegw/pseudonym/v1"
_WRAP_SALT = b"edgegw/epoch-key-wrap/v1"
_MAX_BUNDLE_BYTES = 1 << 20
_MAX_ENTRIES = 2000
_PURGE_INTERVAL_S = 3600.0
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw


class EpochKeyError(EdgeError):
    """A key bundle cannot be read, is not for this gateway, or does not open."""


class EpochKeyMissingError(PrivacyError):
    """No usable epoch key (never delivered, or past its window and destroyed): nothing is pseudonymised."""


def kind_domain(kind: IdKind, community: str) -> str:
    """The derivation domain of an identifier kind: resident ids are separated per community."""
    return f"{kind.value}@{community}" if kind is IdKind.RESIDENT else kind.value


def derive_epoch_key(root_key: bytes, kind: IdKind, label: str, community: str = "") -> bytes:
    """The pseudonym key of (kind, epoch): HKDF-SHA256(root, salt "edgegw/pseudonym/v1",
    info "edgegw pseudonym|<kind domain>|<epoch>"). Only the district's key service calls this."""
    if len(root_key) < 32:
        raise ValueError("the district root key must be at least 32 bytes")
    info = f"edgegw pseudonym|{kind_domain(kind, community)}|{label}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_PSEUDONYM_SALT, info=info).derive(root_key)


class EpochKeySource(Protocol):
    """Where a Pseudonymiser gets the key of (kind, epoch), and the fingerprint that names its root."""

    def epoch_key(self, kind: IdKind, label: str) -> tuple[bytes, str]:
        """(32-byte key, root fingerprint); EpochKeyMissingError when this source has no such key."""
        ...


class RootKeySource:
    """Derives every epoch key from the root key: the district's key service, and tests."""

    def __init__(self, root_key: bytes, community: str = "") -> None:
        if len(root_key) < 32:
            raise ValueError("the district key must be at least 32 bytes")
        self._root = root_key
        self.community = community
        self.fingerprint = key_fingerprint(root_key)
        self._derive = lru_cache(maxsize=256)(self._derive_uncached)

    def __repr__(self) -> str:
        return f"RootKeySource({self.fingerprint})"

    def _derive_uncached(self, kind: IdKind, label: str) -> bytes:
        return derive_epoch_key(self._root, kind, label, self.community)

    def epoch_key(self, kind: IdKind, label: str) -> tuple[bytes, str]:
        """Derive the key (cached)."""
        return self._derive(kind, label), self.fingerprint


# -- the bundle ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One epoch key to deliver: its kind, epoch label, expiry (UTC seconds) and the key."""

    kind: IdKind
    epoch: str
    not_after: float
    key: bytes


@dataclass(frozen=True, slots=True)
class BundleHeader:
    """Who a bundle is for and what it is: bound into every entry's associated data."""

    district: str
    community: str
    gateway: str
    recipient: str
    """The gateway's public key fingerprint."""
    root: str
    """The root key fingerprint (the first part of every key id)."""
    policy: str
    issued: float

    def as_dict(self) -> dict[str, Any]:
        """The header's JSON fields."""
        return {"format": BUNDLE_FORMAT, "district": self.district, "community": self.community,
                "gateway": self.gateway, "recipient": self.recipient, "root": self.root,
                "policy": self.policy, "issued": self.issued}


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _entry_aad(header: dict[str, Any], kind: str, epoch: str, not_after: float) -> bytes:
    return _canonical({**header, "kind": kind, "epoch": epoch, "not_after": not_after})


def _wrap_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_WRAP_SALT + ephemeral + recipient,
                info=b"wrap").derive(shared)


BundleSigner = tuple[bytes, Callable[[bytes], bytes]]
"""(Ed25519 public key, sign function) of the key service."""


def bundle_message(data: dict[str, Any]) -> bytes:
    """What a bundle's signature covers: every field but the signature, as canonical JSON."""
    return b"edgegw/epoch-key-bundle/v1\n" + _canonical({k: v for k, v in data.items() if k != "signature"})


def seal_bundle(header: BundleHeader, entries: Sequence[BundleEntry], recipient: GatewayPublic,
                signer: BundleSigner | None = None) -> str:
    """Wrap `entries` to `recipient` under a fresh ephemeral X25519 key, signed by the key service when
    `signer` is given (anyone holding a gateway's public key can wrap keys to it; only the key
    service can sign); returns the bundle's JSON text."""
    if header.recipient != recipient.fingerprint:
        raise EpochKeyError("the bundle header names another recipient than the key it is wrapped to")
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(_RAW, _RAW_PUB)
    aead = AESGCM(_wrap_key(eph.exchange(recipient.x25519_key()), eph_pub, recipient.x25519))
    head = header.as_dict()
    out = []
    for e in entries:
        nonce = os.urandom(12)
        wrapped = aead.encrypt(nonce, e.key, _entry_aad(head, e.kind.value, e.epoch, e.not_after))
        out.append({"kind": e.kind.value, "epoch": e.epoch, "not_after": e.not_after,
                    "nonce": nonce.hex(), "wrapped": wrapped.hex()})
    data: dict[str, Any] = {**head, "ephemeral": eph_pub.hex(), "keys": out}
    if signer is not None:
        data["signer"] = signer[0].hex()
        data["signature"] = signer[1](bundle_message(data)).hex()
    return json.dumps(data, sort_keys=True, indent=1) + "\n"


def check_bundle_signature(data: dict[str, Any], trusted: bytes) -> None:
    """Refuse a bundle not signed by the trusted key service key (EpochKeyError says which way)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if "signature" not in data:
        raise EpochKeyError("the bundle is not signed, but this gateway accepts only bundles signed by its key "
                            "service (privacy.key_service_public_key)")
    if data.get("signer") != trusted.hex():
        raise EpochKeyError(f"the bundle is signed by key {str(data.get('signer'))[:16]}..., not by this gateway's "
                            f"key service")
    try:
        Ed25519PublicKey.from_public_bytes(trusted).verify(bytes.fromhex(str(data["signature"])), bundle_message(data))
    except (InvalidSignature, ValueError) as exc:
        raise EpochKeyError("the bundle's signature does not verify: it was altered after the key service "
                            "signed it") from exc


@dataclass(frozen=True, slots=True)
class WrappedEntry:
    """One entry as stored on the gateway: still wrapped to the gateway's key."""

    kind: IdKind
    epoch: str
    not_after: float
    root: str
    ephemeral: bytes
    nonce: bytes
    wrapped: bytes
    header: str
    """The bundle header's canonical JSON (part of the associated data)."""


def parse_bundle(text: str | bytes) -> tuple[dict[str, Any], list[WrappedEntry]]:
    """Read a bundle's header (with its signer and signature, if any) and entries (nothing is unwrapped);
    EpochKeyError if it is malformed."""
    if len(text) > _MAX_BUNDLE_BYTES:
        raise EpochKeyError(f"a key bundle is at most {_MAX_BUNDLE_BYTES} bytes")
    try:
        data = json.loads(text)
        head = {k: data[k] for k in ("format", "district", "community", "gateway", "recipient", "root",
                                     "policy", "issued")}
        ephemeral = bytes.fromhex(data["ephemeral"])
        raw_entries = data["keys"]
        if head["format"] != BUNDLE_FORMAT:
            raise EpochKeyError(f"not an {BUNDLE_FORMAT} bundle (format {head['format']!r})")
        if not isinstance(raw_entries, list) or len(raw_entries) > _MAX_ENTRIES or len(ephemeral) != 32:
            raise EpochKeyError("a key bundle holds a list of at most 2000 keys and a 32-byte ephemeral key")
        header_text = _canonical(head).decode("ascii")
        signed = {k: data[k] for k in ("signer", "signature") if k in data}
        entries = [WrappedEntry(IdKind(e["kind"]), str(e["epoch"]), float(e["not_after"]), str(head["root"]),
                                ephemeral, bytes.fromhex(e["nonce"]), bytes.fromhex(e["wrapped"]), header_text)
                   for e in raw_entries]
        if not all(math.isfinite(e.not_after) for e in entries):
            raise EpochKeyError("every key in a bundle expires (a finite not_after)")
    except EpochKeyError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise EpochKeyError(f"the key bundle is malformed ({type(exc).__name__}: {exc})") from None
    return {**head, **signed, "ephemeral": data["ephemeral"], "keys": raw_entries}, entries


def unwrap_entry(identity: GatewayIdentity, entry: WrappedEntry) -> bytes:
    """Open one wrapped entry with the gateway's identity; EpochKeyError if it is not for this key."""
    try:
        shared = identity.exchange(X25519PublicKey.from_public_bytes(entry.ephemeral))
        aead = AESGCM(_wrap_key(shared, entry.ephemeral, identity.public.x25519))
        key = aead.decrypt(entry.nonce, entry.wrapped,
                           _entry_aad(json.loads(entry.header), entry.kind.value, entry.epoch, entry.not_after))
    except (InvalidTag, ValueError) as exc:
        raise EpochKeyError(f"the {entry.kind.value} key of epoch {entry.epoch} does not open with this gateway's "
                            f"key (wrapped to another gateway, or altered)") from exc
    if len(key) != 32:
        raise EpochKeyError(f"the {entry.kind.value} key of epoch {entry.epoch} is not 32 bytes")
    return key


# -- the gateway's store ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HeldKey:
    """An epoch key the gateway holds (no key material): for `edgegw keys status` and erasure."""

    kind: IdKind
    epoch: str
    not_after: float
    root: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What `EpochKeyring.import_bundle` stored and skipped."""

    imported: int
    expired: int
    root: str
    epochs: tuple[str, ...]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS epoch_keys (
    kind      TEXT NOT NULL,
    epoch     TEXT NOT NULL,
    not_after REAL NOT NULL,
    root      TEXT NOT NULL,
    ephemeral BLOB NOT NULL,
    nonce     BLOB NOT NULL,
    wrapped   BLOB NOT NULL,
    header    TEXT NOT NULL,
    PRIMARY KEY (kind, epoch)
);
CREATE TABLE IF NOT EXISTS destroyed (
    kind TEXT NOT NULL, epoch TEXT NOT NULL, destroyed REAL NOT NULL, PRIMARY KEY (kind, epoch)
);
"""


class EpochKeyring:
    """The gateway's epoch keys, stored wrapped to its identity and unwrapped into memory on use.

    Thread-safe; several processes may share the file (capture pseudonymises, the query service
    recomputes pseudonyms for a range, `edgegw keys import` adds a bundle): each lookup of a key not
    yet in memory reads the file, and every lookup checks the key's expiry against the clock.
    """

    def __init__(self, path: Path, identity: GatewayIdentity, *, district: str, community: str, gateway: str,
                 policy: str | None = None, trusted_signer: bytes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._path = Path(path)
        self._policy = policy
        self._trusted = trusted_signer
        self._identity = identity
        self._origin = (district, community, gateway)
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[IdKind, str], tuple[bytes, str, float]] = {}
        self._next_purge = 0.0
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect(self._path, secure_delete=True)
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise EpochKeyError(f"cannot open the epoch key store {self._path}: {exc}") from exc

    def __enter__(self) -> EpochKeyring:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Forget the unwrapped keys and close the file."""
        with self._lock:
            self._cache.clear()
            self._db.close()

    @property
    def path(self) -> Path:
        """The SQLite file of wrapped keys."""
        return self._path

    @property
    def community(self) -> str:
        """This gateway's community (resident keys are per community)."""
        return self._origin[1]

    def import_bundle(self, text: str | bytes) -> ImportReport:
        """Check that a bundle is for this gateway, open every entry (proving it is good), store them wrapped.

        Entries already past their window are skipped, never stored; an epoch destroyed here before
        is not brought back (a bundle replayed after the window must not resurrect old keys).
        """
        head, entries = parse_bundle(text)
        if self._trusted is not None:
            check_bundle_signature(head, self._trusted)
        elif "signature" not in head:
            log.warning("imported an unsigned key bundle: set privacy.key_service_public_key so that only the "
                        "district's key service can provide this gateway's pseudonym keys")
        if head["recipient"] != self._identity.public.fingerprint:
            raise EpochKeyError(f"the bundle is wrapped to gateway key {head['recipient']}, but this gateway's key "
                                f"is {self._identity.public.fingerprint}")
        if (head["district"], head["community"], head["gateway"]) != self._origin:
            raise EpochKeyError(f"the bundle is for {head['district']}/{head['community']}/{head['gateway']}, this "
                                f"gateway is {'/'.join(self._origin)}")
        if self._policy is not None and head["policy"] != self._policy:
            raise EpochKeyError(f"the bundle holds {head['policy']} epoch keys, but this gateway's privacy.epoch is "
                                f"{self._policy}: its pseudonyms would never find them")
        now = self._clock()
        fresh = [e for e in entries if e.not_after > now]
        for e in fresh:
            unwrap_entry(self._identity, e)  # all or nothing: a bad entry refuses the whole bundle
        with self._lock, transaction(self._db):
            gone = {(str(k), str(ep)) for k, ep in self._db.execute("SELECT kind, epoch FROM destroyed")}
            fresh = [e for e in fresh if (e.kind.value, e.epoch) not in gone]
            self._db.executemany(
                "INSERT OR REPLACE INTO epoch_keys (kind, epoch, not_after, root, ephemeral, nonce, wrapped, header) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [(e.kind.value, e.epoch, e.not_after, e.root, e.ephemeral, e.nonce, e.wrapped, e.header)
                 for e in fresh])
            self._cache.clear()
        log.info("imported %d epoch key(s) (root %s), skipped %d past their window",
                 len(fresh), head["root"], len(entries) - len(fresh))
        return ImportReport(len(fresh), len(entries) - len(fresh), str(head["root"]),
                            tuple(sorted({e.epoch for e in fresh})))

    def epoch_key(self, kind: IdKind, label: str) -> tuple[bytes, str]:
        """(key, root fingerprint) of (kind, epoch); EpochKeyMissingError if not held or past its window."""
        now = self._clock()
        if now >= self._next_purge:
            # A daemon runs for months: keys of kinds it never looks up must expire on time too.
            self._next_purge = now + _PURGE_INTERVAL_S
            self.purge(now)
        with self._lock:
            cached = self._cache.get((kind, label))
            if cached is not None and cached[2] > now:
                return cached[0], cached[1]
            row = self._db.execute(
                "SELECT not_after, root, ephemeral, nonce, wrapped, header FROM epoch_keys "
                "WHERE kind = ? AND epoch = ?", (kind.value, label)).fetchone()
        if row is None:
            with self._lock:
                gone = self._db.execute("SELECT 1 FROM destroyed WHERE kind = ? AND epoch = ?",
                                        (kind.value, label)).fetchone()
            if gone is not None:
                raise EpochKeyMissingError(f"the {kind.value} pseudonym key of epoch {label} is past its window "
                                           f"and was destroyed")
            raise EpochKeyMissingError(f"no {kind.value} pseudonym key for epoch {label} on this gateway (import a "
                                       f"key bundle from the district: edgegw keys import)")
        if float(row[0]) <= now:
            self.purge()
            raise EpochKeyMissingError(f"the {kind.value} pseudonym key of epoch {label} is past its window and "
                                       f"was destroyed")
        entry = WrappedEntry(kind, label, float(row[0]), str(row[1]), bytes(row[2]), bytes(row[3]), bytes(row[4]),
                             str(row[5]))
        key = unwrap_entry(self._identity, entry)
        with self._lock:
            self._cache[(kind, label)] = (key, entry.root, entry.not_after)
        return key, entry.root

    def held(self) -> list[HeldKey]:
        """Every key held, by kind then epoch (no key material)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, epoch, not_after, root FROM epoch_keys ORDER BY kind, epoch").fetchall()
        return [HeldKey(IdKind(str(r[0])), str(r[1]), float(r[2]), str(r[3])) for r in rows]

    def epochs_of(self, kind: IdKind) -> list[str]:
        """The epochs whose key of `kind` is held."""
        return [h.epoch for h in self.held() if h.kind is kind]

    def purge(self, now: float | None = None) -> list[HeldKey]:
        """Destroy every key past its window: deleted with secure_delete, the WAL checkpointed and truncated."""
        now = self._clock() if now is None else now
        with self._lock:
            with transaction(self._db):
                rows = self._db.execute("SELECT kind, epoch, not_after, root FROM epoch_keys WHERE not_after <= ?",
                                        (now,)).fetchall()
                self._db.execute("DELETE FROM epoch_keys WHERE not_after <= ?", (now,))
                self._db.executemany("INSERT OR REPLACE INTO destroyed (kind, epoch, destroyed) VALUES (?,?,?)",
                                     [(r[0], r[1], now) for r in rows])
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            gone = [HeldKey(IdKind(str(r[0])), str(r[1]), float(r[2]), str(r[3])) for r in rows]
            for h in gone:
                self._cache.pop((h.kind, h.epoch), None)
        if gone:
            log.info("destroyed %d epoch key(s) past their window", len(gone))
        return gone


def keyed_digest(key: bytes, domain: str, values: Iterable[str]) -> str:
    """A 128-bit HMAC-SHA256 digest of `values` under `key` (length-prefixed, domain-separated), in hex."""
    mac = hmac.new(key, domain.encode() + b"\0", hashlib.sha256)
    for v in values:
        data = v.encode("utf-8")
        mac.update(len(data).to_bytes(4, "big") + data)
    return mac.digest()[:16].hex()
