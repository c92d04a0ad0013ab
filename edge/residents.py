"""The resident gallery: consented face embeddings, sealed with AES-GCM at rest, matched by cosine.

Embeddings are encrypted under a key derived from the data key (never the pseudonym key), bound to
their resident id and row, so a row copied elsewhere in the file does not open. They are decrypted
only into memory for matching.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from edge.errors import EdgeError
from edge.sealed import Sealer
from edge.sqlite import connect, transaction

EMBEDDING_DIM = 128

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    row_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id TEXT NOT NULL,
    consent_ref TEXT NOT NULL,
    enrolled_ts REAL NOT NULL,
    sealed      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_resident ON embeddings (resident_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class GalleryError(EdgeError):
    """The resident gallery cannot be read or written."""


@dataclass(frozen=True, slots=True)
class ResidentInfo:
    """One enrolled resident (for the installer's list)."""

    resident_id: str
    consent_ref: str
    enrolled_ts: float
    embeddings: int


@dataclass(frozen=True, slots=True)
class Match:
    """The best gallery match for a probe embedding."""

    resident_id: str | None
    score: float


def _gallery_key(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"edgegw/residents/v1",
                info=b"resident gallery").derive(data_key)


class ResidentGallery:
    """Enrol, list, remove and match residents; thread-safe; reloads when another process writes."""

    def __init__(self, path: Path, data_key: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._sealer = Sealer(_gallery_key(data_key))
        self._lock = threading.Lock()
        self._db = connect(path)
        self._db.executescript(_SCHEMA)
        self._loaded_version = -1
        self._ids: list[str] = []
        self._matrix: NDArray[np.float32] = np.zeros((0, EMBEDDING_DIM), np.float32)

    @staticmethod
    def _aad(resident_id: str, enrolled_ts: float) -> bytes:
        return f"resident|{resident_id}|{enrolled_ts!r}".encode()

    def enrol(self, resident_id: str, consent_ref: str, embeddings: NDArray[np.float32]) -> int:
        """Store each embedding (rows of an [N,128] array) for `resident_id`; returns N."""
        if not resident_id.strip() or not consent_ref.strip():
            raise GalleryError("enrolment needs a resident id and a consent reference")
        emb = np.asarray(embeddings, np.float32).reshape(-1, EMBEDDING_DIM)
        now = time.time()
        with self._lock, transaction(self._db):
            for i, row in enumerate(emb):
                ts = now + i * 1e-6
                blob = self._sealer.seal(row.astype("<f4").tobytes(), self._aad(resident_id, ts))
                self._db.execute("INSERT INTO embeddings(resident_id, consent_ref, enrolled_ts, sealed) "
                                 "VALUES(?,?,?,?)", (resident_id, consent_ref, ts, blob))
        return len(emb)

    def remove(self, resident_id: str) -> int:
        """Delete every embedding of `resident_id`; returns how many were deleted."""
        with self._lock:
            n = self._db.execute("DELETE FROM embeddings WHERE resident_id = ?", (resident_id,)).rowcount
        return int(n)

    def list(self) -> list[ResidentInfo]:
        """Every enrolled resident, by id."""
        rows = self._db.execute(
            "SELECT resident_id, MIN(consent_ref), MIN(enrolled_ts), COUNT(*) FROM embeddings "
            "GROUP BY resident_id ORDER BY resident_id").fetchall()
        return [ResidentInfo(str(r[0]), str(r[1]), float(r[2]), int(r[3])) for r in rows]

    def _reload_if_changed(self) -> None:
        # data_version changes when another connection (the installer's CLI) commits.
        version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        count = int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
        if (version, count) == (self._loaded_version, len(self._ids)):
            return
        ids: list[str] = []
        rows: list[NDArray[np.float32]] = []
        for rid, ts, blob in self._db.execute("SELECT resident_id, enrolled_ts, sealed FROM embeddings"):
            raw = self._sealer.open(bytes(blob), self._aad(str(rid), float(ts)))
            ids.append(str(rid))
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
