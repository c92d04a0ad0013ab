"""AES-256-GCM sealing of small records, and per-epoch data keys that can be destroyed (crypto-shredding).

Blob format (version 1), all fields concatenated:

    version (1 byte, 0x01) | key id (8 bytes) | nonce (12 random bytes) | ciphertext | tag (16 bytes)

The key id is `edge.keys.key_id(key, domain="sealer")`: it names the key without revealing it, so a
blob opened with the wrong key fails with "sealed under key X, this key is Y" rather than a bare
authentication error. The version byte and key id are authenticated too: the GCM associated data is
b"edgegw/sealed/v1" || header || u32be(len(aad)) || aad, where `aad` is the caller's context (a record
id, a column name), which binds a blob to the place it belongs, so it cannot be moved to another row.

Nonces are random; with 96-bit random nonces a key should seal at most 2**32 blobs (NIST SP 800-38D),
which per-epoch data keys keep far away.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from types import TracebackType
from typing import Concatenate, ParamSpec, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.errors import EdgeError
from edge.keys import key_id
from edge.sqlite import connect, transaction

log = logging.getLogger(__name__)

VERSION = 1
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES
_AAD_DOMAIN = b"edgegw/sealed/v1"
_WRAP_AAD_DOMAIN = b"edgegw/epoch-key/v1\0"
_MAX_LABEL = 64


class SealError(EdgeError):
    """A sealed blob cannot be opened (tampered, wrong key, wrong context) or a key is unusable."""


class KeyDestroyedError(SealError):
    """The epoch's data key was destroyed (crypto-shredded); data sealed under it is gone for good."""


class Sealer:
    """Seals and opens blobs under one AES-256 key."""

    __slots__ = ("_aead", "_key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SealError(f"a sealing key must be 32 bytes (AES-256), got {len(key)}")
        self._aead = AESGCM(key)
        self._key_id = key_id(key, domain="sealer", nbytes=KEY_ID_BYTES)

    def __repr__(self) -> str:
        return f"Sealer(key_id={self._key_id.hex()})"

    @property
    def key_id(self) -> bytes:
        """The 8-byte id written into every blob this sealer makes."""
        return self._key_id

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate `plaintext`, bound to the context `aad`."""
        header = bytes([VERSION]) + self._key_id + os.urandom(NONCE_BYTES)
        return header + self._aead.encrypt(header[1 + KEY_ID_BYTES :], plaintext, _full_aad(header, aad))

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Check and decrypt a blob made by `seal` with the same key and `aad`; SealError otherwise."""
        if len(blob) < HEADER_BYTES + TAG_BYTES:
            raise SealError(f"sealed blob is truncated ({len(blob)} bytes, at least "
                            f"{HEADER_BYTES + TAG_BYTES} expected)")
        if blob[0] != VERSION:
            raise SealError(f"sealed blob has unknown format version {blob[0]} (expected {VERSION})")
        blob_key_id = blob[1 : 1 + KEY_ID_BYTES]
        if blob_key_id != self._key_id:
            raise SealError(f"sealed blob was made under key {blob_key_id.hex()}, but this key is "
                            f"{self._key_id.hex()} (wrong key, or the key id was altered)")
        header = blob[:HEADER_BYTES]
        try:
            return self._aead.decrypt(header[1 + KEY_ID_BYTES :], blob[HEADER_BYTES:], _full_aad(header, aad))
        except InvalidTag as exc:
            raise SealError("sealed blob failed authentication: it was modified, or it belongs to a "
                            "different context (associated data) than the one given") from exc


def _full_aad(header: bytes, aad: bytes) -> bytes:
    return _AAD_DOMAIN + header + struct.pack(">I", len(aad)) + aad


@dataclass(frozen=True, slots=True)
class EpochKeyInfo:
    """A live epoch data key, as listed by `EpochKeyStore.epochs` (no key material)."""

    label: str
    key_id: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class DestroyedKey:
    """Proof of crypto-shredding: which epoch key was destroyed and when (for the audit log)."""

    label: str
    key_id: str
    destroyed_ms: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS epoch_keys (
    label TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS destroyed_keys (
    label TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    destroyed_ms INTEGER NOT NULL
);
"""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _db_errors(
    method: Callable[Concatenate[EpochKeyStore, _P], _R],
) -> Callable[Concatenate[EpochKeyStore, _P], _R]:
    """Translate sqlite3 errors into SealError naming the store file."""

    @wraps(method)
    def wrapper(self: EpochKeyStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise SealError(f"epoch key store {self.path}: {exc}") from exc

    return wrapper


class EpochKeyStore:
    """Per-epoch AES-256 data keys in SQLite, each wrapped (AES-GCM) under a master key.

    Crypto-shredding: `destroy(label)` deletes the wrapped key with `secure_delete` on and truncates the
    WAL, so neither the database file nor its WAL still holds it, and records the destruction; sealed
    data of that epoch can then never be opened, wherever copies of it lie. Limits, stated honestly:
    SQLite cannot reach copies outside its files (backups, flash wear-levelling, file-system
    journals). Those copies are still wrapped under the master key, so rotating the master key
    (`rotate_master`) and destroying the old master key file closes that gap too.

    One instance per process; it is thread-safe, and several processes may share the file: each call
    reads the current row, so a key destroyed by another process stops working here at once.
    """

    def __init__(self, path: Path, master_key: bytes, *, clock: Callable[[], int] = _now_ms) -> None:
        self._path = Path(path)
        self._master = Sealer(master_key)
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, bytes], Sealer] = {}
        try:
            # secure_delete: destroyed keys are overwritten, not left in free pages.
            self._db = connect(self._path, secure_delete=True)
        except sqlite3.Error as exc:
            raise SealError(f"cannot open epoch key store {self._path}: {exc}") from exc
        try:
            self._db.executescript(_SCHEMA)
            self._check_master()
        except sqlite3.Error as exc:
            self._db.close()
            raise SealError(f"cannot open epoch key store {self._path}: {exc}") from exc
        except SealError:
            self._db.close()
            raise

    def __enter__(self) -> EpochKeyStore:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._cache.clear()
            self._db.close()

    @property
    def path(self) -> Path:
        """The SQLite file holding the wrapped keys."""
        return self._path

    @property
    def master_key_id(self) -> str:
        """Hex id of the master key this store is opened with."""
        return self._master.key_id.hex()

    @_db_errors
    def key_for(self, epoch_label: str) -> Sealer:
        """The sealer for an epoch, creating its data key on first use; KeyDestroyedError if shredded."""
        _check_label(epoch_label)
        found = self._load(epoch_label)
        if found is not None:
            return found
        with self._lock, self._write() as db:
            # Re-check inside the write lock: another thread or process may have created it meanwhile.
            row = db.execute("SELECT wrapped FROM epoch_keys WHERE label = ?", (epoch_label,)).fetchone()
            if row is None:
                self._raise_if_destroyed(db, epoch_label)
                data_key = os.urandom(32)
                sealer = Sealer(data_key)
                db.execute(
                    "INSERT INTO epoch_keys (label, key_id, wrapped, created_ms) VALUES (?, ?, ?, ?)",
                    (epoch_label, sealer.key_id.hex(), self._master.seal(data_key, _wrap_aad(epoch_label)),
                     self._clock()),
                )
                log.info("created data key %s for epoch %s", sealer.key_id.hex(), epoch_label)
                return sealer
        loaded = self._load(epoch_label)
        if loaded is None:  # pragma: no cover - destroyed between our two reads by another process
            raise KeyDestroyedError(f"data key of epoch {epoch_label!r} vanished while being created")
        return loaded

    @_db_errors
    def existing(self, epoch_label: str) -> Sealer:
        """The sealer for an epoch whose key exists; KeyDestroyedError or SealError otherwise (never creates)."""
        _check_label(epoch_label)
        found = self._load(epoch_label)
        if found is not None:
            return found
        with self._lock:
            self._raise_if_destroyed(self._db, epoch_label)
        raise SealError(f"no data key for epoch {epoch_label!r} in {self._path}")

    def seal(self, epoch_label: str, plaintext: bytes, aad: bytes) -> bytes:
        """Seal under the epoch's data key (created on demand)."""
        return self.key_for(epoch_label).seal(plaintext, aad)

    def open(self, epoch_label: str, blob: bytes, aad: bytes) -> bytes:
        """Open a blob sealed under the epoch's data key; KeyDestroyedError once the epoch is shredded."""
        return self.existing(epoch_label).open(blob, aad)

    @_db_errors
    def epochs(self) -> list[EpochKeyInfo]:
        """Live epoch keys, oldest label first (for retention jobs choosing what to destroy)."""
        with self._lock:
            rows = self._db.execute("SELECT label, key_id, created_ms FROM epoch_keys ORDER BY label").fetchall()
        return [EpochKeyInfo(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    @_db_errors
    def destroyed(self) -> list[DestroyedKey]:
        """Record of destroyed epoch keys, by label."""
        with self._lock:
            rows = self._db.execute(
                "SELECT label, key_id, destroyed_ms FROM destroyed_keys ORDER BY label").fetchall()
        return [DestroyedKey(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    @_db_errors
    def destroy(self, epoch_label: str) -> DestroyedKey:
        """Crypto-shred an epoch: delete its wrapped key for good and record that (idempotent)."""
        _check_label(epoch_label)
        with self._lock:
            with self._write() as db:
                row = db.execute("SELECT key_id FROM epoch_keys WHERE label = ?", (epoch_label,)).fetchone()
                if row is None:
                    done = db.execute("SELECT key_id, destroyed_ms FROM destroyed_keys WHERE label = ?",
                                      (epoch_label,)).fetchone()
                    if done is not None:
                        return DestroyedKey(epoch_label, str(done[0]), int(done[1]))
                    raise SealError(f"no data key for epoch {epoch_label!r} to destroy in {self._path}")
                record = DestroyedKey(epoch_label, str(row[0]), self._clock())
                db.execute("DELETE FROM epoch_keys WHERE label = ?", (epoch_label,))
                db.execute("INSERT INTO destroyed_keys (label, key_id, destroyed_ms) VALUES (?, ?, ?)",
                           (record.label, record.key_id, record.destroyed_ms))
            self._cache = {k: v for k, v in self._cache.items() if k[0] != epoch_label}
            self._checkpoint()
        log.info("destroyed data key %s of epoch %s", record.key_id, epoch_label)
        return record

    @_db_errors
    def rotate_master(self, new_master_key: bytes) -> None:
        """Re-wrap every live data key under a new master key, in one transaction."""
        new_master = Sealer(new_master_key)
        with self._lock:
            with self._write() as db:
                rows = db.execute("SELECT label, wrapped FROM epoch_keys").fetchall()
                for label, wrapped in rows:
                    data_key = self._unwrap(str(label), bytes(wrapped))
                    db.execute("UPDATE epoch_keys SET wrapped = ? WHERE label = ?",
                               (new_master.seal(data_key, _wrap_aad(str(label))), label))
                db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('master_key_id', ?)",
                           (new_master.key_id.hex(),))
            self._master = new_master
            self._checkpoint()
        log.info("re-wrapped %d epoch keys under master key %s", len(rows), new_master.key_id.hex())

    # -- internals ------------------------------------------------------------------------------

    def _load(self, label: str) -> Sealer | None:
        with self._lock:
            row = self._db.execute("SELECT key_id, wrapped FROM epoch_keys WHERE label = ?", (label,)).fetchone()
            if row is None:
                self._cache = {k: v for k, v in self._cache.items() if k[0] != label}
                return None
            wrapped = bytes(row[1])
            cached = self._cache.get((label, wrapped))
            if cached is not None:
                return cached
            sealer = Sealer(self._unwrap(label, wrapped))
            if sealer.key_id.hex() != row[0]:
                raise SealError(f"data key of epoch {label!r} does not match its recorded key id")
            self._cache[(label, wrapped)] = sealer
            return sealer

    def _unwrap(self, label: str, wrapped: bytes) -> bytes:
        try:
            return self._master.open(wrapped, _wrap_aad(label))
        except SealError as exc:
            raise SealError(f"cannot unwrap the data key of epoch {label!r} in {self._path}: {exc}") from exc

    def _raise_if_destroyed(self, db: sqlite3.Connection, label: str) -> None:
        row = db.execute("SELECT key_id, destroyed_ms FROM destroyed_keys WHERE label = ?", (label,)).fetchone()
        if row is not None:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(row[1]) / 1000))
            raise KeyDestroyedError(f"data key {row[0]} of epoch {label!r} was destroyed at {when} "
                                    f"(crypto-shredded); data sealed under it cannot be opened")

    def _check_master(self) -> None:
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'master_key_id'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (name, value) VALUES ('master_key_id', ?)", (self.master_key_id,))
            elif row[0] != self.master_key_id:
                raise SealError(f"epoch key store {self._path} is wrapped under master key {row[0]}, but "
                                f"the given master key is {self.master_key_id} (wrong key file?)")

    def _checkpoint(self) -> None:
        # Move the WAL into the database (where secure_delete overwrote the old row) and truncate it,
        # so the WAL does not keep a copy of a destroyed or re-wrapped key. Another process reading
        # at this moment can make the checkpoint partial; it is retried on the next destroy.
        row = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if row is not None and row[0]:
            log.warning("WAL checkpoint of %s was blocked by a reader; old key pages may linger in the WAL "
                        "until the next checkpoint", self._path)

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db)


def _wrap_aad(label: str) -> bytes:
    return _WRAP_AAD_DOMAIN + label.encode("utf-8")


def _check_label(label: str) -> None:
    if not label or len(label) > _MAX_LABEL or not label.isprintable():
        raise SealError(f"epoch label must be 1..{_MAX_LABEL} printable characters, got {label!r}")
