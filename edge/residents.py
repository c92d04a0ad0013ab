"""The resident gallery: consented face embeddings and who consented to what, all sealed per resident.

Each resident has a random key of their own, wrapped (AES-GCM) under the gallery key derived from the
data key (never the pseudonym key). Under it are sealed the resident's id, their consent record and
every embedding, each bound to its row. Nothing about a resident is stored in clear: rows are found by
a keyed digest of the id (HMAC under a second key derived from the data key), and the audit log names
a resident only by a random `handle` that exists nowhere but in their row.

Erasure (`erase`: removal, or withdrawn consent) deletes the row with its wrapped key under
`secure_delete` and truncates the WAL: the key is shredded, so a copy of the old file (a backup)
opens nothing of that resident either. Embeddings are decrypted only into memory, for matching.

A gallery written by an earlier version (ids and consent references in clear) is migrated on opening
and the old table dropped and vacuumed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from edge.errors import EdgeError
from edge.sealed import Sealer, SealError
from edge.sqlite import connect, transaction

log = logging.getLogger(__name__)

EMBEDDING_DIM = 128
DEFAULT_PURPOSES = ("gate_access_face",)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS residents (
    handle      TEXT PRIMARY KEY,
    id_digest   TEXT NOT NULL UNIQUE,
    wrapped_key BLOB NOT NULL,
    sealed_id   BLOB NOT NULL,
    consent     BLOB NOT NULL,
    enrolled_ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS resident_embeddings (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    handle TEXT NOT NULL REFERENCES residents (handle) ON DELETE CASCADE,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS resident_embeddings_handle ON resident_embeddings (handle);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class GalleryError(EdgeError):
    """The resident gallery cannot be read or written."""


@dataclass(frozen=True, slots=True)
class Consent:
    """Who consented, when, to what; the reference of the signed form."""

    reference: str
    consented_by: str = "resident"
    """The resident themselves, or a guardian or representative (named as the form names them)."""
    consented_at: float | None = None
    """When the form was signed (UTC seconds); the enrolment time when not given."""
    purposes: tuple[str, ...] = DEFAULT_PURPOSES

    def as_json(self, at: float) -> bytes:
        """The sealed form of the record."""
        return json.dumps({"reference": self.reference, "by": self.consented_by,
                           "at": self.consented_at if self.consented_at is not None else at,
                           "purposes": list(self.purposes)}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> Consent:
        """Read `as_json`'s form."""
        data = json.loads(blob)
        return cls(str(data["reference"]), str(data["by"]), float(data["at"]), tuple(data["purposes"]))


@dataclass(frozen=True, slots=True)
class ResidentInfo:
    """One enrolled resident (for the installer's list)."""

    resident_id: str
    consent: Consent
    enrolled_ts: float
    embeddings: int
    handle: str

    @property
    def consent_ref(self) -> str:
        """The consent form's reference."""
        return self.consent.reference


@dataclass(frozen=True, slots=True)
class Erasure:
    """What erasing one resident destroyed (for the audit: the handle links to nothing afterwards)."""

    handle: str
    embeddings: int


@dataclass(frozen=True, slots=True)
class Match:
    """The best gallery match for a probe embedding."""

    resident_id: str | None
    score: float


def _derive(data_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"edgegw/residents/v1", info=info).derive(data_key)


class ResidentGallery:
    """Enrol, list, erase and match residents; thread-safe; reloads when another process writes."""

    def __init__(self, path: Path, data_key: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._legacy = Sealer(_derive(data_key, b"resident gallery"))
        self._wrap = Sealer(_derive(data_key, b"resident keys v2"))
        self._index_key = _derive(data_key, b"resident id index v2")
        self._lock = threading.Lock()
        # secure_delete: an erased resident's wrapped key and blobs are overwritten, not left in free pages.
        self._db = connect(path, secure_delete=True, foreign_keys=True)
        self._db.executescript(_SCHEMA)
        self._migrate_v1()
        self._loaded_version = -1
        self._ids: list[str] = []
        self._matrix: NDArray[np.float32] = np.zeros((0, EMBEDDING_DIM), np.float32)

    def _id_digest(self, resident_id: str) -> str:
        return hmac.new(self._index_key, resident_id.encode(), hashlib.sha256).hexdigest()

    def _resident_sealer(self, handle: str, wrapped: bytes) -> Sealer:
        return Sealer(self._wrap.open(wrapped, f"resident-key|{handle}".encode()))

    def enrol(self, resident_id: str, consent: Consent | str, embeddings: NDArray[np.float32]) -> int:
        """Store each embedding (rows of an [N,128] array) for `resident_id` with their consent; returns N.

        Enrolling an enrolled resident again adds embeddings and replaces the consent record.
        """
        if isinstance(consent, str):
            consent = Consent(consent)
        if not resident_id.strip() or not consent.reference.strip() or not consent.consented_by.strip():
            raise GalleryError("enrolment needs a resident id, a consent reference and who consented")
        if not consent.purposes:
            raise GalleryError("a consent record names at least one purpose")
        emb = np.asarray(embeddings, np.float32).reshape(-1, EMBEDDING_DIM)
        now = time.time()
        digest = self._id_digest(resident_id)
        with self._lock, transaction(self._db):
            row = self._db.execute("SELECT handle, wrapped_key FROM residents WHERE id_digest = ?",
                                   (digest,)).fetchone()
            if row is None:
                handle = os.urandom(16).hex()
                key = os.urandom(32)
                sealer = Sealer(key)
                self._db.execute(
                    "INSERT INTO residents (handle, id_digest, wrapped_key, sealed_id, consent, enrolled_ts) "
                    "VALUES (?,?,?,?,?,?)",
                    (handle, digest, self._wrap.seal(key, f"resident-key|{handle}".encode()),
                     sealer.seal(resident_id.encode(), f"resident-id|{handle}".encode()),
                     sealer.seal(consent.as_json(now), f"consent|{handle}".encode()), now))
            else:
                handle = str(row[0])
                sealer = self._resident_sealer(handle, bytes(row[1]))
                self._db.execute("UPDATE residents SET consent = ? WHERE handle = ?",
                                 (sealer.seal(consent.as_json(now), f"consent|{handle}".encode()), handle))
            for vec in emb:
                cur = self._db.execute("INSERT INTO resident_embeddings (handle, sealed) VALUES (?, x'')", (handle,))
                rid = int(cur.lastrowid or 0)
                self._db.execute("UPDATE resident_embeddings SET sealed = ? WHERE row_id = ?",
                                 (sealer.seal(vec.astype("<f4").tobytes(), f"embedding|{handle}|{rid}".encode()), rid))
        return len(emb)

    def handle_of(self, resident_id: str) -> str | None:
        """The random handle the audit names `resident_id` by, if enrolled."""
        with self._lock:
            row = self._db.execute("SELECT handle FROM residents WHERE id_digest = ?",
                                   (self._id_digest(resident_id),)).fetchone()
        return None if row is None else str(row[0])

    def erase(self, resident_id: str) -> Erasure | None:
        """Shred a resident: their key, id, consent record and embeddings; None if not enrolled."""
        digest = self._id_digest(resident_id)
        with self._lock:
            with transaction(self._db):
                row = self._db.execute("SELECT handle FROM residents WHERE id_digest = ?", (digest,)).fetchone()
                if row is None:
                    return None
                handle = str(row[0])
                n = int(self._db.execute("SELECT COUNT(*) FROM resident_embeddings WHERE handle = ?",
                                         (handle,)).fetchone()[0])
                self._db.execute("DELETE FROM resident_embeddings WHERE handle = ?", (handle,))
                self._db.execute("DELETE FROM residents WHERE handle = ?", (handle,))
            # Move the WAL into the file (where secure_delete overwrote the rows) and truncate it.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return Erasure(handle, n)

    def remove(self, resident_id: str) -> int:
        """Erase `resident_id` (see `erase`); returns how many embeddings were destroyed (0: not enrolled)."""
        done = self.erase(resident_id)
        return 0 if done is None else done.embeddings

    def list(self) -> list[ResidentInfo]:
        """Every enrolled resident, by id (decrypted for the installer; never embeddings)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT r.handle, r.wrapped_key, r.sealed_id, r.consent, r.enrolled_ts, COUNT(e.row_id) "
                "FROM residents r LEFT JOIN resident_embeddings e ON e.handle = r.handle GROUP BY r.handle").fetchall()
        out = []
        for handle, wrapped, sealed_id, consent, ts, n in rows:
            sealer = self._resident_sealer(str(handle), bytes(wrapped))
            rid = sealer.open(bytes(sealed_id), f"resident-id|{handle}".encode()).decode()
            record = Consent.from_json(sealer.open(bytes(consent), f"consent|{handle}".encode()))
            out.append(ResidentInfo(rid, record, float(ts), int(n), str(handle)))
        return sorted(out, key=lambda r: r.resident_id)

    def _reload_if_changed(self) -> None:
        # data_version changes when another connection (the installer's CLI) commits.
        version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        count = int(self._db.execute("SELECT COUNT(*) FROM resident_embeddings").fetchone()[0])
        if (version, count) == (self._loaded_version, len(self._ids)):
            return
        ids: list[str] = []
        rows: list[NDArray[np.float32]] = []
        sealers: dict[str, tuple[Sealer, str]] = {}
        for handle, wrapped, sealed_id in self._db.execute("SELECT handle, wrapped_key, sealed_id FROM residents"):
            sealer = self._resident_sealer(str(handle), bytes(wrapped))
            sealers[str(handle)] = (sealer, sealer.open(bytes(sealed_id), f"resident-id|{handle}".encode()).decode())
        for handle, rid, blob in self._db.execute("SELECT handle, row_id, sealed FROM resident_embeddings"):
            found = sealers.get(str(handle))
            if found is None:
                continue
            raw = found[0].open(bytes(blob), f"embedding|{handle}|{rid}".encode())
            ids.append(found[1])
            rows.append(np.frombuffer(raw, "<f4").astype(np.float32))
        self._ids = ids
        self._matrix = np.stack(rows) if rows else np.zeros((0, EMBEDDING_DIM), np.float32)
        norms = np.linalg.norm(self._matrix, axis=1, keepdims=True)
        self._matrix = (self._matrix / np.maximum(norms, 1e-12)).astype(np.float32)
        self._loaded_version = version

    def match(self, embedding: NDArray[np.float32], threshold: float) -> Match:
        """The best resident whose cosine similarity reaches `threshold` (else resident_id None)."""
        with self._lock:
            self._reload_if_changed()
            if not self._ids:
                return Match(None, -1.0)
            probe = np.asarray(embedding, np.float32).reshape(-1)
            probe = probe / max(float(np.linalg.norm(probe)), 1e-12)
            scores = self._matrix @ probe
            best = int(np.argmax(scores))
            score = float(scores[best])
            return Match(self._ids[best] if score >= threshold else None, score)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _migrate_v1(self) -> None:
        """Re-seal a v1 gallery (clear ids and consent references) per resident, then drop and vacuum it."""
        old = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'embeddings'").fetchone()
        if old is None:
            return
        by_resident: dict[tuple[str, str], list[NDArray[np.float32]]] = {}
        try:
            for rid, consent, ts, blob in self._db.execute(
                    "SELECT resident_id, consent_ref, enrolled_ts, sealed FROM embeddings ORDER BY row_id"):
                raw = self._legacy.open(bytes(blob), f"resident|{rid}|{float(ts)!r}".encode())
                by_resident.setdefault((str(rid), str(consent)), []).append(np.frombuffer(raw, "<f4").copy())
        except SealError as exc:
            raise GalleryError(f"cannot migrate the resident gallery {self.path}: {exc}") from exc
        for (rid, consent), vecs in by_resident.items():
            self.enrol(rid, Consent(consent), np.stack(vecs))
        with transaction(self._db):
            self._db.execute("DROP TABLE embeddings")
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.info("migrated %d resident(s) of %s to per-resident keys", len(by_resident), self.path)
