"""An append-only, hash-chained audit log in SQLite, with an anchor file for the chain head.

Each record commits to the one before it:

    hash = SHA-256( b"edgegw/audit/v1\\n" || canonical_json([seq, ts_ms, actor, action, details, prev_hash]) )

where `details` is the record's canonical JSON text (a string inside the array), `prev_hash` is the
previous record's hash (64 zeros for record 1, `GENESIS_HASH`), and canonical JSON means sorted keys,
no whitespace, ASCII only, no NaN. `record_hash` computes it, so anyone can re-verify an export.

Threat model, honestly:
- `verify` detects any edit, deletion or reordering inside the chain made by someone who does not
  re-hash the records after the change, and says which record fails and why.
- The chain has no secret: whoever can write the database can rewrite it from any record on and
  re-hash everything after. A key on this same machine would not help (that writer could read it too).
  What defeats a consistent rewrite, and the one kind of tampering a chain cannot show by itself
  (cutting records off the end), is an *anchor*: a (seq, hash) pair recorded elsewhere earlier.
- Anchors: (1) the head published in the gateway's status message, which the platform stores; pass
  it as `verify(expected=...)` (`edgegw audit verify --expect-head SEQ:HASH`); this is the strong one.
  (2) A small local anchor file rewritten after every append (default: next to the database; put it
  on another file system or under another owner to make it worth more). It catches rollbacks
  (an old backup restored, a copied-back file, a crash that lost the end of the WAL) and writers who
  reach the database but not the anchor; it does not stop root on the gateway, who can rewrite both.
- The anchor is written after the commit, so a crash between the two leaves it one record behind
  (never ahead): no false alarm, but that last record is covered only by the published head.
- `details` are stored in clear. Callers pass pseudonyms, case ids and counts only; raw identifiers
  (`RawIdentifier`), bytes and arrays are refused with PrivacyError. Timestamps come from the gateway
  clock and prove only order within the chain.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

from pydantic import Field

from edge.compat import StrEnum
from edge.configbase import StrictModel
from edge.errors import EdgeError, PrivacyError
from edge.sqlite import connect, transaction
from edge.types import RawIdentifier

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
_HASH_DOMAIN = b"edgegw/audit/v1\n"
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_ACTION_RE = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_MAX_ACTOR = 128
_MAX_DEPTH = 8

JsonValue: TypeAlias = "str | int | float | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
"""A value allowed in audit details: JSON data, no bytes, arrays or raw identifiers."""


class AuditConfig(StrictModel):
    """The hash-chained audit log (queries, purges, enrolments, key rotations, config changes)."""

    path: Path = Path("audit.db")
    anchor_path: Path | None = None
    """Default: `<path>.anchor`; put it on another file system or owner to make it worth more."""
    case_keys_path: Path = Path("audit-case-keys.db")
    """The per-case keys of the audit's digests (shredded with the case, or after `case_key_days`)."""
    case_key_days: float = Field(default=365.0, gt=0)
    """A case key older than this is shredded: its queries' digests link to nothing any more."""
    retention_days: float = Field(default=730.0, gt=0)
    """Records older than this are pruned from the start of the chain (which stays verifiable from
    the pruned point on); the platform keeps the signed heads published before."""


class AuditError(EdgeError):
    """The audit log cannot be opened or written, or a record is invalid."""


class AuditAction(StrEnum):
    """Common audit actions; other lowercase snake_case strings are accepted too."""

    QUERY = "query"
    QUERY_REFUSED = "query_refused"
    BIOMETRIC_QUERY = "biometric_query"
    """A photo search: biometric processing of stored faces, audited apart from other queries."""
    REFUSALS = "refusals"
    """Refusals aggregated over a window (a flood of bad requests must not fsync one record each)."""
    ENROL = "enrol"
    REMOVE = "remove"
    KEY_ROTATE = "key_rotate"
    KEY_DESTROY = "key_destroy"
    PURGE = "purge"
    CONFIG_CHANGE = "config_change"


class Problem(StrEnum):
    """What `verify` found wrong."""

    EDITED = "edited"  # a record's contents no longer match its hash
    DELETED = "deleted"  # sequence numbers are missing
    REORDERED = "reordered"  # a record sits at the wrong place in the chain
    BROKEN_LINK = "broken_link"  # a record does not follow the one before it (re-hashed edit, splice)
    TRUNCATED = "truncated"  # records at the end are gone (seen against an anchor)
    REWRITTEN = "rewritten"  # the chain is consistent but differs from an anchored head
    ANCHOR_MISSING = "anchor_missing"  # the anchor file is gone or unreadable while records exist


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record's sequence number and hash (0 and GENESIS_HASH for an empty log)."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> ChainHead:
        """Parse `SEQ:HASH` as printed by `str()` and published in status messages."""
        seq_text, sep, digest = text.strip().partition(":")
        if not sep or not seq_text.isdigit() or not _HASH_RE.fullmatch(digest):
            raise AuditError(f"a chain head is SEQ:HASH with a 64-hex-digit hash, got {text!r}")
        return cls(int(seq_text), digest)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored audit record; `details` is its canonical JSON text."""

    seq: int
    ts_ms: int
    actor: str
    action: str
    details: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of `AuditLog.verify`: ok, or the first bad record, the kind of problem and an explanation."""

    ok: bool
    records: int
    head: ChainHead
    first_bad_seq: int | None = None
    problem: Problem | None = None
    message: str = ""


def canonical_json(value: object) -> str:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only, finite numbers only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def record_hash(*, seq: int, ts_ms: int, actor: str, action: str, details: str, prev_hash: str) -> str:
    """The hash of one record (see the module docstring for the exact encoding)."""
    payload = canonical_json([seq, ts_ms, actor, action, details, prev_hash]).encode("ascii")
    return hashlib.sha256(_HASH_DOMAIN + payload).hexdigest()


def canonical_details(details: Mapping[str, JsonValue]) -> str:
    """Check that `details` hold only JSON data (no raw identifiers, bytes or arrays) and encode them."""
    _check_value(details, "details", 0)
    return canonical_json(details)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS audit_base (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL,
                                       hash TEXT NOT NULL, pruned_ms INTEGER NOT NULL);
"""
_NO_DELETE = """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"""
# The triggers stop mistakes in our own code, not an attacker (who can drop them); the chain does that.

_COLUMNS = "seq, ts_ms, actor, action, details, prev_hash, hash"


class AuditLog:
    """The audit log: `append` records, `head` for the status message, `verify` for tamper evidence.

    Safe for concurrent appends from threads and from several processes (`BEGIN IMMEDIATE` takes the
    write lock before the head is read, so two writers never fork the chain).
    """

    def __init__(
        self,
        path: Path,
        *,
        anchor_path: Path | None = None,
        create: bool = True,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self._path = Path(path)
        self._anchor_path = Path(anchor_path) if anchor_path is not None else default_anchor_path(self._path)
        self._clock = clock
        self._lock = threading.Lock()
        if not create and not self._path.is_file():
            raise AuditError(f"no audit log at {self._path}")
        try:
            self._db = connect(self._path, secure_delete=True)  # pruned records are overwritten
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open audit log {self._path}: {exc}") from exc
        try:
            if create:
                self._db.executescript(_SCHEMA)
            elif self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'"
            ).fetchone() is None:
                raise AuditError(f"{self._path} is not an edgegw audit log (no audit table)")
        except (sqlite3.Error, AuditError) as exc:
            self._db.close()
            if isinstance(exc, AuditError):
                raise
            raise AuditError(f"cannot open audit log {self._path}: {exc}") from exc

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def anchor_path(self) -> Path:
        """The anchor file rewritten after each append."""
        return self._anchor_path

    def append(self, actor: str, action: AuditAction | str, details: Mapping[str, JsonValue]) -> AuditRecord:
        """Append one record and return it; it is durable (and anchored) when this returns."""
        if not actor or len(actor) > _MAX_ACTOR or not actor.isprintable():
            raise AuditError(f"audit actor must be 1..{_MAX_ACTOR} printable characters")
        action = str(action)
        if not _ACTION_RE.fullmatch(action):
            raise AuditError(f"audit action must be lowercase snake_case, got {action!r}")
        details_text = canonical_details(details)
        failed = lambda exc: AuditError(f"cannot append to audit log {self._path}: {exc}")  # noqa: E731
        with self._lock, transaction(self._db, failed):
            head = self._head()
            seq = head.seq + 1
            ts_ms = self._clock()
            digest = record_hash(seq=seq, ts_ms=ts_ms, actor=actor, action=action, details=details_text,
                                 prev_hash=head.hash)
            self._db.execute(
                f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (seq, ts_ms, actor, action, details_text, head.hash, digest),
            )
        record = AuditRecord(seq, ts_ms, actor, action, details_text, head.hash, digest)
        try:
            self._advance_anchor(ChainHead(seq, digest))
        except AuditError as exc:
            # Fail loudly: the record is durable, but without the anchor a cut-off end goes unseen.
            raise AuditError(f"audit record {seq} was committed, but {exc}") from exc
        log.debug("audit %d %s by %s", seq, action, actor)
        return record

    def head(self) -> ChainHead:
        """The current chain head, for publishing in the status message."""
        with self._lock:
            try:
                return self._head()
            except sqlite3.Error as exc:
                raise AuditError(f"cannot read audit log {self._path}: {exc}") from exc

    def last(self, action: AuditAction | str) -> AuditRecord | None:
        """The newest record of `action`, if any."""
        sql = f"SELECT {_COLUMNS} FROM audit WHERE action = ? ORDER BY seq DESC LIMIT 1"  # noqa: S608
        with self._lock:
            try:
                row = self._db.execute(sql, (str(action),)).fetchone()
            except sqlite3.Error as exc:
                raise AuditError(f"cannot read audit log {self._path}: {exc}") from exc
        return None if row is None else AuditRecord(*row)

    def records(self, *, limit: int | None = None) -> list[AuditRecord]:
        """All records in order, or the last `limit` of them."""
        sql = f"SELECT {_COLUMNS} FROM audit ORDER BY seq DESC"  # noqa: S608
        params: tuple[int, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (max(0, limit),)
        with self._lock:
            try:
                rows = self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise AuditError(f"cannot read audit log {self._path}: {exc}") from exc
        return [AuditRecord(*row) for row in reversed(rows)]

    def base(self) -> ChainHead:
        """Where the retained chain starts: the last pruned record (0 and GENESIS_HASH if none was)."""
        with self._lock:
            return self._base()

    def prune(self, before_ms: int, *, actor: str = "system:audit") -> int:
        """Retention: delete the records older than `before_ms` from the start of the chain (never the
        newest), remember the last deleted record as the chain's base, and audit the prune.

        The retained chain verifies from its base on; the platform, which stores the signed heads
        the gateway published, can still check the base against them. Returns how many were deleted.
        """
        failed = lambda exc: AuditError(f"cannot prune audit log {self._path}: {exc}")  # noqa: E731
        with self._lock, transaction(self._db, failed):
            head = self._head()
            row = self._db.execute("SELECT MAX(seq) FROM audit WHERE ts_ms < ? AND seq < ?",
                                   (before_ms, head.seq)).fetchone()
            last = row[0] if row is not None else None
            if not isinstance(last, int):
                return 0
            base_hash = str(self._db.execute("SELECT hash FROM audit WHERE seq = ?", (last,)).fetchone()[0])
            # The trigger guards against our own mistakes; retention is the one deliberate delete.
            self._db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
            n = int(self._db.execute("DELETE FROM audit WHERE seq <= ?", (last,)).rowcount)
            self._db.execute(_NO_DELETE)
            self._db.execute("INSERT OR REPLACE INTO audit_base (id, seq, hash, pruned_ms) VALUES (1, ?, ?, ?)",
                             (last, base_hash, self._clock()))
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.append(actor, "audit_prune", {"deleted": n, "base_seq": last, "base_hash": base_hash})
        return n

    def read_anchor(self) -> ChainHead | None:
        """The head recorded in the anchor file; None if the file does not exist."""
        return _read_anchor(self._anchor_path)

    def verify(self, expected: ChainHead | None = None, *, use_anchor_file: bool = True) -> VerifyResult:
        """Check the whole chain, then the end of it against `expected` and the anchor file.

        Reports the first problem found: the record where it is, what kind, and a sentence saying why.
        """
        anchors: list[tuple[ChainHead, str]] = []
        if expected is not None:
            anchors.append((expected, "the expected head"))
        anchor_error = ""
        if use_anchor_file:
            # Read the anchor before the database snapshot: appends only move both forward, so the
            # snapshot is never behind the anchor unless records were really removed.
            try:
                from_file = self.read_anchor()
            except AuditError as exc:
                from_file, anchor_error = None, str(exc)
            if from_file is not None:
                anchors.append((from_file, f"the anchor file {self._anchor_path}"))
            elif not anchor_error:
                anchor_error = f"the anchor file {self._anchor_path} is missing"
        with self._lock:
            try:
                self._db.execute("BEGIN")  # one consistent snapshot for the whole walk
                try:
                    return self._verify(anchors, anchor_error)
                finally:
                    self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise AuditError(f"cannot read audit log {self._path}: {exc}") from exc

    # -- internals ------------------------------------------------------------------------------

    def _head(self) -> ChainHead:
        row = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return self._base() if row is None else ChainHead(int(row[0]), str(row[1]))

    def _base(self) -> ChainHead:
        try:
            row = self._db.execute("SELECT seq, hash FROM audit_base WHERE id = 1").fetchone()
        except sqlite3.OperationalError:  # a log from before retention existed (opened with create=False)
            return ChainHead(0, GENESIS_HASH)
        return ChainHead(0, GENESIS_HASH) if row is None else ChainHead(int(row[0]), str(row[1]))

    def _verify(self, anchors: list[tuple[ChainHead, str]], anchor_error: str) -> VerifyResult:
        base = self._base()
        # Anchors older than the retained chain cannot be checked here (the platform checks them).
        anchors = [(a, src) for a, src in anchors if a.seq >= base.seq]
        wanted = {a.seq for a, _ in anchors}
        seen: dict[int, str] = {base.seq: base.hash}
        prev = base
        count = 0

        def bad(seq: int, problem: Problem, message: str) -> VerifyResult:
            return VerifyResult(False, count, self._head(), seq, problem, message)

        cursor = self._db.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq")  # noqa: S608
        for row in cursor:
            seq = row[0]
            expected_seq = prev.seq + 1
            if not isinstance(seq, int) or seq < expected_seq:
                return bad(expected_seq, Problem.EDITED, f"a record has sequence number {seq!r} where "
                           f"{expected_seq} was expected (edited)")
            if seq > expected_seq:
                gap = f"record {expected_seq}" if seq == expected_seq + 1 else f"records {expected_seq}-{seq - 1}"
                return bad(expected_seq, Problem.DELETED, f"{gap} missing: the log jumps from record "
                           f"{prev.seq} to {seq} (deleted)")
            if not _well_typed(row):
                return bad(seq, Problem.EDITED, f"record {seq} has a field of the wrong type (edited)")
            rec = AuditRecord(*row)
            if _rehash(rec, rec.seq) != rec.hash:
                origin = self._original_position(rec)
                if origin is not None:
                    return bad(seq, Problem.REORDERED, f"record {seq} holds the entry that belongs at "
                               f"position {origin} (records reordered)")
                return bad(seq, Problem.EDITED, f"record {seq}'s contents do not match its hash (edited)")
            if rec.prev_hash != prev.hash:
                follows = self._seq_with_hash(rec.prev_hash)
                if follows is not None and follows != prev.seq:
                    return bad(seq, Problem.REORDERED, f"record {seq} follows record {follows} in the chain, "
                               f"not record {prev.seq} (records reordered, or records inserted before it)")
                return bad(seq, Problem.BROKEN_LINK, f"record {seq} does not link to record {prev.seq}: "
                           f"record {prev.seq} was altered and re-hashed, or records between them were "
                           f"removed or inserted")
            if seq in wanted:
                seen[seq] = rec.hash
            prev = ChainHead(rec.seq, rec.hash)
            count += 1
        for anchor, source in anchors:
            if anchor.seq > prev.seq:
                gone = f"record {anchor.seq}" if anchor.seq == prev.seq + 1 else f"records {prev.seq + 1}-{anchor.seq}"
                return bad(prev.seq + 1, Problem.TRUNCATED, f"the log ends at record {prev.seq} but "
                           f"{source} says it reached record {anchor.seq}: {gone} removed (truncated)")
            if seen[anchor.seq] != anchor.hash:
                return bad(anchor.seq, Problem.REWRITTEN, f"record {anchor.seq} differs from {source}: the "
                           f"log was rewritten (and re-hashed) at or before record {anchor.seq}")
        if anchor_error and count:
            return bad(prev.seq, Problem.ANCHOR_MISSING, f"{anchor_error}; cannot rule out that records "
                       f"were cut off the end")
        return VerifyResult(True, count, prev, message=f"{count} records, chain intact")

    def _original_position(self, rec: AuditRecord) -> int | None:
        """Where a record whose hash fails really belongs, if it is intact but moved; None otherwise."""
        candidates: set[int] = set()
        successor = self._db.execute("SELECT seq FROM audit WHERE prev_hash = ? LIMIT 2", (rec.hash,)).fetchall()
        candidates.update(int(r[0]) - 1 for r in successor if isinstance(r[0], int))
        pred = self._seq_with_hash(rec.prev_hash)
        if pred is not None:
            candidates.add(pred + 1)
        if rec.prev_hash == GENESIS_HASH:
            candidates.add(1)
        for seq in sorted(candidates - {rec.seq}):
            if _rehash(rec, seq) == rec.hash:
                return seq
        return None

    def _seq_with_hash(self, digest: str) -> int | None:
        if digest == GENESIS_HASH:
            return 0
        row = self._db.execute("SELECT seq FROM audit WHERE hash = ? LIMIT 1", (digest,)).fetchone()
        return int(row[0]) if row is not None and isinstance(row[0], int) else None

    def _advance_anchor(self, head: ChainHead) -> None:
        """Move the anchor file forward to `head` (never back), serialised across processes."""
        lock_path = self._anchor_path.with_name(self._anchor_path.name + ".lock")
        try:
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot lock audit anchor {lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                current = _read_anchor(self._anchor_path)
            except AuditError as exc:
                log.warning("replacing unreadable audit anchor: %s", exc)
                current = None
            if current is not None and current.seq >= head.seq:
                # Another process anchored a later record already (or the log went backwards, which
                # verify will report; keep the evidence).
                return
            _write_atomic(self._anchor_path, canonical_json({"seq": head.seq, "hash": head.hash}) + "\n")
        except OSError as exc:
            raise AuditError(f"cannot write audit anchor {self._anchor_path}: {exc.strerror}") from exc
        finally:
            os.close(lock_fd)  # also releases the flock


def default_anchor_path(db_path: Path) -> Path:
    """The anchor file beside a database: `<db>.anchor`."""
    return db_path.with_name(db_path.name + ".anchor")


def _read_anchor(path: Path) -> ChainHead | None:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"the anchor file {path} cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
        seq, digest = data["seq"], data["hash"]
    except (ValueError, TypeError, KeyError) as exc:
        raise AuditError(f"the anchor file {path} is malformed") from exc
    if not isinstance(seq, int) or seq < 0 or not isinstance(digest, str) or not _HASH_RE.fullmatch(digest):
        raise AuditError(f"the anchor file {path} is malformed")
    return ChainHead(seq, digest)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        # Keep the mode of the anchor being replaced: where two daemons share the audit (a group
        # directory, systemd/edgegw.tmpfiles.conf pre-creates it 0660), the next one must read it.
        with contextlib.suppress(FileNotFoundError):
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode) & 0o660)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _rehash(rec: AuditRecord, seq: int) -> str:
    """The hash `rec` would have if it sat at `seq`."""
    return record_hash(seq=seq, ts_ms=rec.ts_ms, actor=rec.actor, action=rec.action, details=rec.details,
                       prev_hash=rec.prev_hash)


def _well_typed(row: Sequence[object]) -> bool:
    seq, ts_ms, actor, action, details, prev_hash, digest = row
    return (
        isinstance(seq, int)
        and isinstance(ts_ms, int)
        and all(isinstance(v, str) for v in (actor, action, details, prev_hash, digest))
    )


def _check_value(value: object, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise AuditError(f"audit {where} nests deeper than {_MAX_DEPTH} levels")
    if isinstance(value, RawIdentifier):
        raise PrivacyError(f"audit {where} holds a raw {value.kind.value} identifier; pass its pseudonym")
    if isinstance(value, bytes | bytearray | memoryview) or hasattr(value, "__array__"):
        raise PrivacyError(f"audit {where} holds bytes or an array (an image or embedding?); not allowed")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AuditError(f"audit {where} holds a non-finite number")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditError(f"audit {where} has a non-string key {key!r}")
            _check_value(item, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)
        return
    raise AuditError(f"audit {where} holds a {type(value).__name__}; only JSON data is allowed")


HeadSigner = Callable[[int, str], dict[str, object]]
"""(seq, hash) → the signed head for the status message (the gateway's Ed25519 key; edge.privacy.identity)."""


def audit_status(audit: AuditLog, sign: HeadSigner | None = None) -> dict[str, dict[str, object]]:
    """The status message fragment that lets the platform anchor the audit chain.

    With `sign`, the head is signed by the gateway's key, so the platform can tell the gateway's own
    heads from any broker client's, and a head that no longer appears in the log proves a rewrite.
    """
    head = audit.head()
    if sign is not None:
        return {"audit_head": sign(head.seq, head.hash)}
    return {"audit_head": {"seq": head.seq, "hash": head.hash}}
