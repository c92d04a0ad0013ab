"""The local passage store: one SQLite row per committed event, raw fields sealed under per-epoch keys.

Each row holds what the published event holds (kind, gate, source, time, pseudonym and key id or
random reference, direction) plus, sealed with AES-GCM, the raw field the event left behind: the
plate text, card number, MAC or resident id, and the face embedding of an unknown person. Sealed
fields are encrypted under a data key per (data class, UTC day), from an `EpochKeyStore` whose master
key is derived from the data-at-rest key (never the pseudonym key). Each blob is bound to its row,
field and epoch (associated data), so it cannot be moved to another row.

Retention is per data class (`RetentionConfig`): `purge` deletes expired rows and sealed fields and
then destroys every epoch key whose whole day has expired (crypto-shredding: copies of the blobs in
backups or free pages can then never be opened). Every purge writes one audit record.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from edge.audit import AuditAction, AuditLog
from edge.compat import UTC, StrEnum
from edge.errors import EdgeError
from edge.passages.config import PassageConfig, RetentionConfig
from edge.sealed import DestroyedKey, EpochKeyStore, KeyDestroyedError, Sealer
from edge.sqlite import connect, transaction
from edge.types import Derived, Event, EventKind, IdKind, Observation

log = logging.getLogger(__name__)

EMBEDDING_DIM = 128
DAY_S = 86400.0
_AAD_DOMAIN = "edgegw/passage/v1"
_STORED_KINDS = frozenset({EventKind.FACE_PASSAGE, EventKind.PLATE_PASSAGE, EventKind.CARD_SWIPE,
                           EventKind.DEVICE_SEEN, EventKind.PASSAGE})
_SQL_VARS = 500  # stay well below SQLite's host-parameter limit in IN (...) lists
BACKLOG_MAX = 20_000
"""Events kept in memory (raw fields included, never on disk) for a store that cannot write, e.g. on a
full disk, and recorded when it can again; beyond this many the oldest are lost, counted."""
_RETRY_S = 1.0
_RETRY_BATCH = 500


class StoreError(EdgeError):
    """The passage store cannot be opened, read or written."""


class DataClass(StrEnum):
    """Classes of stored data, each with its own retention and its own epoch keys."""

    RECORDS = "records"
    PLATES = "plates"
    CARDS = "cards"
    DEVICES = "devices"
    FACES = "faces"


class SealedField(StrEnum):
    """Which raw field a sealed blob holds."""

    IDENTIFIER = "identifier"
    EMBEDDING = "embedding"


_ID_CLASS = {IdKind.PLATE: DataClass.PLATES, IdKind.CARD: DataClass.CARDS, IdKind.MAC: DataClass.DEVICES,
             IdKind.RESIDENT: DataClass.RECORDS}


def retention_days(retention: RetentionConfig, data_class: DataClass) -> float:
    """How many days data of `data_class` is kept."""
    days: float = getattr(retention, f"{data_class.value}_days")
    return days


def epoch_of(data_class: DataClass, ts: float) -> str:
    """The epoch key label for data of `data_class` observed at `ts`: `<class>.<UTC day>`."""
    return f"{data_class.value}.{datetime.fromtimestamp(ts, UTC).strftime('%Y-%m-%d')}"


def _epoch_end(label: str) -> tuple[DataClass, float] | None:
    cls_text, _, day = label.partition(".")
    try:
        cls = DataClass(cls_text)
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return cls, start + DAY_S


def store_master_key(data_key: bytes) -> bytes:
    """The passage store's key-wrapping key, derived from the data-at-rest key (domain-separated)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"edgegw/passages/v1",
                info=b"passage store epoch keys").derive(data_key)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One stored event, as the store gives it back (no raw values: see `raw_identifier`)."""

    event_id: str
    kind: EventKind
    gate: str | None
    source_id: str
    ts: float
    subject_type: str | None
    pseudonym: str | None
    key_id: str | None
    ref: str | None
    direction: str | None
    links: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What one purge deleted and destroyed."""

    now: float
    records_deleted: int
    sealed_deleted: dict[str, int]
    keys_destroyed: tuple[DestroyedKey, ...]
    audit_seq: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    event_id     TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    gate         TEXT,
    source_id    TEXT NOT NULL,
    ts           REAL NOT NULL,
    subject_type TEXT,
    pseudonym    TEXT,
    key_id       TEXT,
    ref          TEXT,
    direction    TEXT
);
CREATE INDEX IF NOT EXISTS records_pseudonym ON records (pseudonym, ts);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE TABLE IF NOT EXISTS links (
    passage_id TEXT NOT NULL REFERENCES records (event_id) ON DELETE CASCADE,
    member_id  TEXT NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (passage_id, member_id)
);
CREATE INDEX IF NOT EXISTS links_member ON links (member_id);
CREATE TABLE IF NOT EXISTS sealed (
    event_id   TEXT NOT NULL REFERENCES records (event_id) ON DELETE CASCADE,
    field      TEXT NOT NULL,
    data_class TEXT NOT NULL,
    epoch      TEXT NOT NULL,
    ts         REAL NOT NULL,
    blob       BLOB NOT NULL,
    PRIMARY KEY (event_id, field)
);
CREATE INDEX IF NOT EXISTS sealed_class_ts ON sealed (data_class, ts);
"""

_COLUMNS = "event_id, kind, gate, source_id, ts, subject_type, pseudonym, key_id, ref, direction"


def _aad(event_id: str, field: SealedField, epoch: str) -> bytes:
    return f"{_AAD_DOMAIN}|{event_id}|{field.value}|{epoch}".encode()


def _direction(event: Event) -> str | None:
    for key in ("direction", "side"):
        value = event.attrs.get(key)
        if isinstance(value, str):
            return value
    return None


class PassageStore:
    """Records committed events (a CommitObserver), answers the query service, purges by retention.

    Thread-safe. Several processes may share the files (the capture daemon writes, the query
    service reads): SQLite in WAL mode, and the epoch key store re-reads keys on every use.
    """

    def __init__(
        self,
        path: Path,
        keys: EpochKeyStore,
        config: PassageConfig,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = Path(path)
        self._keys = keys
        self._cfg = config
        self._audit = audit
        self._clock = clock
        self._lock = threading.Lock()
        self._next_purge: float | None = None
        self.stored = 0
        self.failures = 0
        self.missed = 0
        """Events a write failed to record at first (each kept for a retry, or counted in `lost`)."""
        self.recorded_late = 0
        self.lost = 0
        self._backlog: deque[tuple[Observation, Event]] = deque()
        self._next_retry = 0.0
        self._last_error: str | None = None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # secure_delete: purged blobs are overwritten, not left in free pages.
            self._db = connect(self._path, synchronous="NORMAL", secure_delete=True, foreign_keys=True)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open passage store {self._path}: {exc}") from exc
        try:
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot open passage store {self._path}: {exc}") from exc

    @classmethod
    def open(
        cls,
        path: Path,
        keys_path: Path,
        data_key: bytes,
        config: PassageConfig,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
    ) -> PassageStore:
        """Open the store and its epoch key store (master key derived from `data_key`)."""
        keys_path.parent.mkdir(parents=True, exist_ok=True)
        keys = EpochKeyStore(keys_path, store_master_key(data_key),
                             clock=lambda: int(clock() * 1000))
        try:
            return cls(path, keys, config, audit, clock=clock)
        except BaseException:
            keys.close()
            raise

    def __enter__(self) -> PassageStore:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the database and the key store."""
        with self._lock:
            self._db.close()
        self._keys.close()

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def keys(self) -> EpochKeyStore:
        """The epoch key store (for inspection: which keys live, which were destroyed)."""
        return self._keys

    @property
    def config(self) -> PassageConfig:
        """The passage config the store was opened with."""
        return self._cfg

    # -- CommitObserver ---------------------------------------------------------------------------

    def committed(self, pairs: Sequence[tuple[Observation, Event]]) -> list[Derived]:
        """Record committed events; never raises (the events are safe in the outbox already).

        A store that cannot write (a full disk) keeps what it missed in memory, bounded, and records
        it once a write succeeds again; the counts are in `health()`, which capture's status carries.
        """
        if self._backlog:
            self._keep(pairs)  # behind what is waiting, so records go in commit order
            self._retry()
            return []
        try:
            self.record(pairs)
        except (EdgeError, sqlite3.Error, OSError) as exc:
            self._failed(exc, len(pairs))
            self._keep(pairs)
        return []

    def _failed(self, exc: Exception, n: int) -> None:
        self.failures += 1
        text = str(exc)
        if text != self._last_error or self.failures % 1000 == 1:
            # Once per distinct error (and every 1000th): a full disk fails every write the same way.
            # No exc_info: the message names the store and the problem, never a value.
            log.error("passage store %s could not record %d event(s) (kept for a retry; %d failed writes so "
                      "far): %s", self._path, n, self.failures, exc)
            self._last_error = text

    def _keep(self, pairs: Sequence[tuple[Observation, Event]]) -> None:
        stored = [p for p in pairs if p[1].kind in _STORED_KINDS]
        self.missed += len(stored)
        self._backlog.extend(stored)
        while len(self._backlog) > BACKLOG_MAX:
            self._backlog.popleft()
            self.lost += 1

    def _retry(self, *, force: bool = False) -> None:
        # At most once a second, and a small batch first: sealing the whole backlog on every commit
        # of a still-full disk would hold up the committer (and so every camera) for nothing.
        now = time.monotonic()
        if not self._backlog or (not force and now < self._next_retry):
            return
        self._next_retry = now + _RETRY_S
        done = 0
        while self._backlog:
            batch = [self._backlog[i] for i in range(min(_RETRY_BATCH, len(self._backlog)))]
            try:
                self.record(batch)
            except (EdgeError, sqlite3.Error, OSError) as exc:
                self._failed(exc, len(batch))
                break
            for _ in batch:
                self._backlog.popleft()
            done += len(batch)
        if done:
            self.recorded_late += done
            if not self._backlog:
                self._last_error = None
            log.warning("passage store %s recorded %d event(s) it had missed (%d waiting, %d lost in all)",
                        self._path, done, len(self._backlog), self.lost)

    def health(self) -> dict[str, int | str | None]:
        """Write health for the gateway's status: failed writes, events missed, recorded late, waiting, lost."""
        return {"stored": self.stored, "failures": self.failures, "missed": self.missed,
                "recorded_late": self.recorded_late, "backlog": len(self._backlog), "lost": self.lost,
                "last_error": self._last_error}

    def tick(self, now: float) -> list[Derived]:
        """Run the periodic purge when it is due (never on the shutdown tick, whose `now` is infinite)."""
        self._retry(force=not math.isfinite(now))
        interval = self._cfg.purge_interval_s
        if interval <= 0 or not math.isfinite(now):
            return []
        if self._next_purge is None or now >= self._next_purge:
            self._next_purge = now + interval
            try:
                self.purge(actor="system:passages")
            except (EdgeError, sqlite3.Error, OSError) as exc:
                self.failures += 1
                log.error("passage purge failed, retrying in %.0f s: %s", interval, exc)
        return []

    # -- writing ----------------------------------------------------------------------------------

    def record(self, pairs: Sequence[tuple[Observation, Event]]) -> int:
        """Store the events that belong in the store (raises StoreError); returns how many."""
        now = self._clock()
        ret = self._cfg.retention
        rows: list[tuple[object, ...]] = []
        sealed: list[tuple[object, ...]] = []
        links: list[tuple[str, str, int]] = []
        for obs, event in pairs:
            if event.kind not in _STORED_KINDS or event.ts < now - ret.records_days * DAY_S:
                continue
            subj = event.subject
            # A passage's source is its gate; a member's gate comes from the source-to-gate map.
            gate = event.source_id if event.kind is EventKind.PASSAGE else self._cfg.gate_of(event.source_id)
            rows.append((event.event_id, event.kind.value, gate, event.source_id,
                         event.ts, subj.type if subj else None, subj.pseudonym if subj else None,
                         subj.key_id if subj else None, subj.ref if subj else None, _direction(event)))
            links += [(event.event_id, member, i) for i, member in enumerate(event.links)]
            if obs.subject is not None:
                blob = self._seal(event, _ID_CLASS[obs.subject.kind], SealedField.IDENTIFIER,
                                  obs.subject.value.encode("utf-8"), now)
                if blob is not None:
                    sealed.append(blob)
            elif obs.embedding is not None and event.kind is EventKind.FACE_PASSAGE:
                # Unknown faces only: a resident is found by their pseudonym, not by biometrics.
                emb = np.asarray(obs.embedding, np.float32).reshape(-1)
                if emb.size != EMBEDDING_DIM:
                    raise StoreError(f"face embedding has {emb.size} values, {EMBEDDING_DIM} expected")
                emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
                blob = self._seal(event, DataClass.FACES, SealedField.EMBEDDING, emb.astype("<f4").tobytes(), now)
                if blob is not None:
                    sealed.append(blob)
        if not rows:
            return 0
        failed = lambda exc: StoreError(f"cannot write passage store {self._path}: {exc}")  # noqa: E731
        with self._lock, transaction(self._db, failed):
            self._db.executemany(
                f"INSERT OR IGNORE INTO records ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)  # noqa: S608
            self._db.executemany("INSERT OR IGNORE INTO sealed (event_id, field, data_class, epoch, ts, blob) "
                                 "VALUES (?,?,?,?,?,?)", sealed)
            self._db.executemany("INSERT OR IGNORE INTO links (passage_id, member_id, position) "
                                 "VALUES (?,?,?)", links)
        self.stored += len(rows)
        return len(rows)

    def _seal(self, event: Event, data_class: DataClass, field: SealedField, plaintext: bytes,
              now: float) -> tuple[object, ...] | None:
        if event.ts < now - retention_days(self._cfg.retention, data_class) * DAY_S:
            return None  # already past its retention: do not keep it at all
        epoch = epoch_of(data_class, event.ts)
        try:
            blob = self._keys.seal(epoch, plaintext, _aad(event.event_id, field, epoch))
        except KeyDestroyedError:
            return None  # that day was shredded already; a late arrival must not resurrect it
        return (event.event_id, field.value, data_class.value, epoch, event.ts, blob)

    # -- reading ----------------------------------------------------------------------------------

    def by_pseudonyms(self, subject_type: str, pseudonyms: Sequence[str], t1: float, t2: float, *,
                      gate: str | None = None, limit: int = 1000) -> list[StoredRecord]:
        """Records about any of `pseudonyms` (of `subject_type`) between t1 and t2, oldest first."""
        out: list[StoredRecord] = []
        for i in range(0, len(pseudonyms), _SQL_VARS):
            chunk = list(pseudonyms[i:i + _SQL_VARS])
            marks = ",".join("?" * len(chunk))
            sql = (f"SELECT {_COLUMNS} FROM records WHERE subject_type = ? AND pseudonym IN ({marks}) "  # noqa: S608
                   "AND ts >= ? AND ts <= ?")
            params: list[object] = [subject_type, *chunk, t1, t2]
            if gate is not None:
                sql += " AND gate = ?"
                params.append(gate)
            out += self._select(sql + " ORDER BY ts LIMIT ?", [*params, limit])
        return sorted(out, key=lambda r: r.ts)[:limit]

    def in_range(self, t1: float, t2: float, *, gate: str | None = None, limit: int = 1000,
                 kinds: Iterable[EventKind] | None = None) -> list[StoredRecord]:
        """Records between t1 and t2 (optionally at one gate, of some kinds), oldest first."""
        sql = f"SELECT {_COLUMNS} FROM records WHERE ts >= ? AND ts <= ?"  # noqa: S608
        params: list[object] = [t1, t2]
        if gate is not None:
            sql += " AND gate = ?"
            params.append(gate)
        if kinds is not None:
            wanted = [k.value for k in kinds]
            sql += f" AND kind IN ({','.join('?' * len(wanted))})"
            params += wanted
        return self._select(sql + " ORDER BY ts, event_id LIMIT ?", [*params, limit])

    def get(self, event_ids: Sequence[str]) -> dict[str, StoredRecord]:
        """The stored records with these event_ids (missing ones are left out)."""
        out: dict[str, StoredRecord] = {}
        for i in range(0, len(event_ids), _SQL_VARS):
            chunk = list(event_ids[i:i + _SQL_VARS])
            sql = f"SELECT {_COLUMNS} FROM records WHERE event_id IN ({','.join('?' * len(chunk))})"  # noqa: S608
            out.update((r.event_id, r) for r in self._select(sql, chunk))
        return out

    def passages_of(self, member_ids: Sequence[str]) -> dict[str, list[str]]:
        """For each member event_id, the passage event_ids that link it (newest last)."""
        out: dict[str, list[str]] = {}
        for i in range(0, len(member_ids), _SQL_VARS):
            chunk = list(member_ids[i:i + _SQL_VARS])
            sql = (f"SELECT l.member_id, l.passage_id FROM links l JOIN records r ON r.event_id = l.passage_id "  # noqa: S608
                   f"WHERE l.member_id IN ({','.join('?' * len(chunk))}) ORDER BY r.ts")
            for member, passage in self._rows(sql, chunk):
                out.setdefault(str(member), []).append(str(passage))
        return out

    def members_of(self, passage_id: str) -> list[StoredRecord]:
        """The stored member records of one passage, in link order."""
        sql = (f"SELECT {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))} FROM links l "  # noqa: S608
               "JOIN records r ON r.event_id = l.member_id WHERE l.passage_id = ? ORDER BY l.position")
        return self._select(sql, [passage_id])

    def expand(self, hit_ids: Sequence[str], *, raw: bool = False) -> Expansion:
        """Everything a query answer shows for these records and passages, in one pass.

        For each id: its record; for each passage among them: its member records in link order; with
        `raw`, the decrypted raw identifier of every record shown (one read of the sealed fields, one
        key lookup per epoch). Ids of purged records are left out.
        """
        records = self.get(list(hit_ids))
        passages = [i for i, r in records.items() if r.kind is EventKind.PASSAGE]
        members: dict[str, list[StoredRecord]] = {p: [] for p in passages}
        cols = ", ".join("r." + c.strip() for c in _COLUMNS.split(","))
        for i in range(0, len(passages), _SQL_VARS):
            chunk = passages[i:i + _SQL_VARS]
            sql = (f"SELECT l.passage_id, {cols} FROM links l JOIN records r ON r.event_id = l.member_id "  # noqa: S608
                   f"WHERE l.passage_id IN ({','.join('?' * len(chunk))}) ORDER BY l.passage_id, l.position")
            for row in self._rows(sql, chunk):
                members[str(row[0])].append(_record(row[1:]))
        shown = list(records) + [m.event_id for ms in members.values() for m in ms]
        return Expansion(records, members, self.raw_identifiers(shown) if raw else {})

    def raw_identifiers(self, event_ids: Sequence[str]) -> dict[str, str]:
        """Decrypt the raw identifiers of these records (missing, expired or shredded ones are left out)."""
        out: dict[str, str] = {}
        sealers: dict[str, Sealer | None] = {}  # one key lookup per epoch, not per row
        ids = list(dict.fromkeys(event_ids))
        for i in range(0, len(ids), _SQL_VARS):
            chunk = ids[i:i + _SQL_VARS]
            sql = (f"SELECT event_id, epoch, blob FROM sealed WHERE field = ? "  # noqa: S608
                   f"AND event_id IN ({','.join('?' * len(chunk))})")
            for event_id, epoch_value, blob in self._rows(sql, [SealedField.IDENTIFIER.value, *chunk]):
                epoch = str(epoch_value)
                sealer = self._sealer(epoch, sealers)
                if sealer is not None:
                    out[str(event_id)] = sealer.open(bytes(blob), _aad(str(event_id), SealedField.IDENTIFIER,
                                                                      epoch)).decode("utf-8")
        return out

    def _sealer(self, epoch: str, cache: dict[str, Sealer | None]) -> Sealer | None:
        """The epoch's sealer, looked up once per read (None once the epoch key is destroyed)."""
        if epoch not in cache:
            try:
                cache[epoch] = self._keys.existing(epoch)
            except KeyDestroyedError:
                cache[epoch] = None
        return cache[epoch]

    def raw_identifier(self, event_id: str) -> str | None:
        """Decrypt a record's raw identifier; None if it has none, it expired or its key was destroyed."""
        blob = self._sealed_blob(event_id, SealedField.IDENTIFIER)
        if blob is None:
            return None
        epoch, data = blob
        try:
            return self._keys.open(epoch, data, _aad(event_id, SealedField.IDENTIFIER, epoch)).decode("utf-8")
        except KeyDestroyedError:
            return None

    def face_embeddings(self, t1: float, t2: float, *, gate: str | None = None
                        ) -> tuple[list[StoredRecord], NDArray[np.float32]]:
        """Decrypt the retained face embeddings between t1 and t2: (records, [N,128] unit rows)."""
        sql = (f"SELECT {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))}, s.epoch, s.blob "  # noqa: S608
               "FROM sealed s JOIN records r ON r.event_id = s.event_id "
               "WHERE s.field = ? AND s.ts >= ? AND s.ts <= ?")
        params: list[object] = [SealedField.EMBEDDING.value, t1, t2]
        if gate is not None:
            sql += " AND r.gate = ?"
            params.append(gate)
        records: list[StoredRecord] = []
        rows: list[NDArray[np.float32]] = []
        sealers: dict[str, Sealer | None] = {}  # one key lookup per epoch, not per row
        for row in self._rows(sql + " ORDER BY s.ts", params):
            record = _record(row[:10])
            epoch, blob = str(row[10]), bytes(row[11])
            sealer = self._sealer(epoch, sealers)
            if sealer is None:
                continue
            raw = sealer.open(blob, _aad(record.event_id, SealedField.EMBEDDING, epoch))
            records.append(record)
            rows.append(np.frombuffer(raw, "<f4").astype(np.float32))
        matrix = np.stack(rows) if rows else np.zeros((0, EMBEDDING_DIM), np.float32)
        return records, matrix

    def sealed_blob(self, event_id: str, field: SealedField) -> tuple[str, bytes] | None:
        """(epoch label, sealed bytes) of a field, as stored (for tests and key-destruction checks)."""
        return self._sealed_blob(event_id, field)

    def open_sealed(self, event_id: str, field: SealedField, epoch: str, blob: bytes) -> bytes:
        """Open a sealed blob of `event_id`'s `field` (KeyDestroyedError once its epoch is shredded)."""
        return self._keys.open(epoch, blob, _aad(event_id, field, epoch))

    def counts(self) -> dict[str, int]:
        """Rows per table (status and tests)."""
        return {t: int(self._rows(f"SELECT COUNT(*) FROM {t}", [])[0][0])  # noqa: S608
                for t in ("records", "links", "sealed")}

    def erase_subject(self, subject_type: str, pseudonyms: Sequence[str]) -> int:
        """Erase every record about a subject (by its pseudonyms in each epoch) and every passage they were
        part of, with its other members (the card they swiped, the phone they carried: observations of
        the same passage of the same person), sealed fields included, overwritten (secure_delete), the WAL
        truncated; returns how many records were erased.

        For a resident's erasure: afterwards no record decrypts to their id or to what passed with them,
        and none carries a pseudonym of theirs. The caller audits it (by the resident's handle).
        """
        erased: set[str] = set()
        with self._lock:
            def failed(exc: sqlite3.Error) -> StoreError:
                return StoreError(f"cannot erase from passage store {self._path}: {exc}")

            def select(sql: str, values: Sequence[str], *extra: object) -> set[str]:
                out: set[str] = set()
                for i in range(0, len(values), _SQL_VARS):
                    chunk = list(values[i:i + _SQL_VARS])
                    out |= {str(r[0]) for r in self._db.execute(sql.format(",".join("?" * len(chunk))),
                                                                 [*extra, *chunk])}
                return out

            with transaction(self._db, failed):
                subject = select("SELECT event_id FROM records WHERE subject_type = ? AND pseudonym IN ({})",
                                 pseudonyms, subject_type)
                passages = select("SELECT passage_id FROM links WHERE member_id IN ({})", sorted(subject))
                members = select("SELECT member_id FROM links WHERE passage_id IN ({})", sorted(passages))
                erased = subject | passages | members
                ids = sorted(erased)
                for i in range(0, len(ids), _SQL_VARS):
                    chunk = ids[i:i + _SQL_VARS]
                    marks = ",".join("?" * len(chunk))
                    self._db.execute(f"DELETE FROM links WHERE member_id IN ({marks}) OR passage_id IN ({marks})",  # noqa: S608
                                     [*chunk, *chunk])
                    self._db.execute(f"DELETE FROM sealed WHERE event_id IN ({marks})", chunk)  # noqa: S608
                    self._db.execute(f"DELETE FROM records WHERE event_id IN ({marks})", chunk)  # noqa: S608
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise failed(exc) from exc
        return len(erased)

    # -- retention --------------------------------------------------------------------------------

    def purge(self, now: float | None = None, *, actor: str = "system:passages") -> PurgeReport:
        """Delete expired rows and sealed fields, destroy expired epoch keys, audit it; returns a report."""
        now = self._clock() if now is None else now
        if not math.isfinite(now):
            raise StoreError("purge needs a finite time")
        ret = self._cfg.retention
        sealed_deleted: dict[str, int] = {}
        with self._lock:
            def failed(exc: sqlite3.Error) -> StoreError:
                return StoreError(f"cannot purge passage store {self._path}: {exc}")

            with transaction(self._db, failed):
                records = self._db.execute("DELETE FROM records WHERE ts < ?",
                                           (now - ret.records_days * DAY_S,)).rowcount
                for cls in DataClass:
                    cut = now - retention_days(ret, cls) * DAY_S
                    n = self._db.execute("DELETE FROM sealed WHERE data_class = ? AND ts < ?",
                                         (cls.value, cut)).rowcount
                    if n:
                        sealed_deleted[cls.value] = int(n)
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise failed(exc) from exc
        destroyed: list[DestroyedKey] = []
        for info in self._keys.epochs():
            parsed = _epoch_end(info.label)
            if parsed is None:
                continue
            cls, end = parsed
            if end <= now - retention_days(ret, cls) * DAY_S:
                destroyed.append(self._keys.destroy(info.label))
        record = self._audit.append(actor, AuditAction.PURGE, {
            "store": "passages",
            "now": round(now, 3),
            "records_deleted": int(records),
            "sealed_deleted": dict(sealed_deleted),
            "keys_destroyed": [{"epoch": d.label, "key_id": d.key_id} for d in destroyed],
            "retention_days": {cls.value: retention_days(ret, cls) for cls in DataClass},
        })
        log.info("purged %d record(s), %d sealed field(s), destroyed %d epoch key(s)",
                 records, sum(sealed_deleted.values()), len(destroyed))
        return PurgeReport(now, int(records), sealed_deleted, tuple(destroyed), record.seq)

    # -- internals --------------------------------------------------------------------------------

    def _sealed_blob(self, event_id: str, field: SealedField) -> tuple[str, bytes] | None:
        rows = self._rows("SELECT epoch, blob FROM sealed WHERE event_id = ? AND field = ?", [event_id, field.value])
        return (str(rows[0][0]), bytes(rows[0][1])) if rows else None

    def _rows(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, tuple(params)).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read passage store {self._path}: {exc}") from exc

    def _select(self, sql: str, params: Sequence[object]) -> list[StoredRecord]:
        rows = [_record(r) for r in self._rows(sql, params)]
        passages = [r.event_id for r in rows if r.kind is EventKind.PASSAGE]
        if not passages:
            return rows
        linked: dict[str, list[str]] = {}
        for i in range(0, len(passages), _SQL_VARS):
            chunk = passages[i:i + _SQL_VARS]
            sql_links = (f"SELECT passage_id, member_id FROM links WHERE passage_id IN "  # noqa: S608
                         f"({','.join('?' * len(chunk))}) ORDER BY passage_id, position")
            for pid, mid in self._rows(sql_links, chunk):
                linked.setdefault(str(pid), []).append(str(mid))
        return [_with_links(r, tuple(linked.get(r.event_id, ()))) for r in rows]


@dataclass(frozen=True, slots=True)
class Expansion:
    """A query answer's records in one pass: the records asked for, passage members, raw identifiers."""

    records: dict[str, StoredRecord]
    members: dict[str, list[StoredRecord]]
    """Passage event_id → its member records in link order."""
    raw: dict[str, str]
    """event_id → decrypted raw identifier (only when asked for, and only while its key lives)."""


def _record(row: Sequence[object]) -> StoredRecord:
    def opt(v: object) -> str | None:
        return None if v is None else str(v)

    ts = row[4]
    return StoredRecord(
        event_id=str(row[0]), kind=EventKind(str(row[1])), gate=opt(row[2]), source_id=str(row[3]),
        ts=float(ts) if isinstance(ts, int | float) else float("nan"), subject_type=opt(row[5]),
        pseudonym=opt(row[6]), key_id=opt(row[7]), ref=opt(row[8]), direction=opt(row[9]),
    )


def _with_links(record: StoredRecord, links: tuple[str, ...]) -> StoredRecord:
    return StoredRecord(record.event_id, record.kind, record.gate, record.source_id, record.ts, record.subject_type,
                        record.pseudonym, record.key_id, record.ref, record.direction, links)
