"""The platform's own hash-chained audit log, in PostgreSQL.

Records are hashed exactly like the gateway's chain (`edge.audit.record_hash`: seq, time, actor,
action, canonical details, previous hash), so one verifier reads both. Appends take a transaction
advisory lock, so concurrent API processes never fork the chain. Details are checked like the
gateway's (`canonical_details`: JSON data only, no raw identifiers).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from edge.audit import GENESIS_HASH, JsonValue, canonical_details, record_hash

Conn = psycopg.Connection[tuple[object, ...]]
_LOCK = 0x6564676567770002


@dataclass(frozen=True, slots=True)
class PlatformRecord:
    """One appended record."""

    seq: int
    ts_ms: int
    hash: str


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """Outcome of `verify`: ok, or the first bad seq and why."""

    ok: bool
    records: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    message: str = ""


def append(conn: Conn, actor: str, action: str, details: Mapping[str, JsonValue]) -> PlatformRecord:
    """Append one record in its own transaction (commits on return)."""
    text = canonical_details(details)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        row = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (1, GENESIS_HASH) if row is None else (int(str(row[0])) + 1, str(row[1]))
        ts_ms = time.time_ns() // 1_000_000
        digest = record_hash(seq=seq, ts_ms=ts_ms, actor=actor, action=action, details=text, prev_hash=prev)
        conn.execute("INSERT INTO audit_log (seq, ts_ms, actor, action, details, prev_hash, hash) "
                     "VALUES (%s, %s, %s, %s, %s, %s, %s)", (seq, ts_ms, actor, action, text, prev, digest))
    return PlatformRecord(seq, ts_ms, digest)


def verify(conn: Conn) -> ChainCheck:
    """Walk the whole chain and re-hash every record; report the first one that does not fit."""
    prev, expected_seq, n = GENESIS_HASH, 1, 0
    with conn.transaction(), conn.cursor(name="audit_walk") as cur:
        cur.execute("SELECT seq, ts_ms, actor, action, details, prev_hash, hash FROM audit_log ORDER BY seq")
        for seq, ts_ms, actor, action, details, prev_hash, digest in cur:
            n += 1
            s = int(str(seq))
            if s != expected_seq:
                return ChainCheck(False, n, expected_seq - 1, prev, s, f"record {expected_seq} is missing")
            if prev_hash != prev:
                return ChainCheck(False, n, s - 1, prev, s, f"record {s} does not link to record {s - 1}")
            again = record_hash(seq=s, ts_ms=int(str(ts_ms)), actor=str(actor), action=str(action),
                                details=str(details), prev_hash=str(prev_hash))
            if again != digest:
                return ChainCheck(False, n, s - 1, prev, s, f"record {s} was altered (its hash does not match)")
            prev, expected_seq = str(digest), s + 1
    return ChainCheck(True, n, expected_seq - 1, prev)
