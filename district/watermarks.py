"""Committed watermarks per source and boot, gap detection and replay requests (the end-to-end protocol).

The wire protocol is the gateway's (docs/delivery.md §5): per gateway, retained QoS 1 on
`{base}/ack` the body `{"boot": B, "marks": {source: seq}}`, where `seq` is the highest seq with
nothing missing at or below it that is committed here, for the newest boot seen. A gap that does
not close within `gap_grace_s` gets a replay request on `{base}/replay` (docs/district.md):

    {"boot": B, "source": "cam1", "from": 1201, "to": 1260, "request_id": "…", "ts": 1764000000.123}

The marks live in PostgreSQL, so any worker can publish any gateway's watermark and a restarted
worker carries on where the others are.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg

from district.messages import GatewayKey, StatusRow

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class SourceKey:
    """One sequence space: a gateway's source within one outbox boot."""

    gw: GatewayKey
    source: str
    boot: int


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """Ask a gateway to send `source`'s seqs `first`..`last` of `boot` again."""

    gw: GatewayKey
    source: str
    boot: int
    first: int
    last: int

    def body(self) -> bytes:
        """The JSON payload published on `{base}/replay`."""
        return json.dumps({"boot": self.boot, "source": self.source, "from": self.first, "to": self.last,
                           "request_id": str(uuid.uuid4()), "ts": round(time.time(), 3)},
                          sort_keys=True).encode()


def _columns(keys: Sequence[SourceKey]) -> tuple[list[str], list[str], list[str], list[str], list[int]]:
    return ([k.gw.district for k in keys], [k.gw.community for k in keys], [k.gw.gateway for k in keys],
            [k.source for k in keys], [k.boot for k in keys])


def source_ids(conn: Conn, keys: Iterable[SourceKey]) -> dict[SourceKey, int]:
    """The integer id of each key (own committed transaction: creates the marks rows it lacks).

    Committed before any batch refers to the ids, so an id a worker caches always names a row."""
    ordered = sorted(set(keys), key=lambda k: (k.gw.district, k.gw.community, k.gw.gateway, k.source, k.boot))
    if not ordered:
        return {}
    with conn.transaction():
        rows = conn.execute("SELECT o_district, o_community, o_gateway, o_source, o_boot, o_src FROM "
                            "source_ids(%s, %s, %s, %s, %s)", _columns(ordered)).fetchall()
    return {SourceKey(GatewayKey(str(d), str(c), str(g)), str(s), int(str(b))): int(str(i))
            for d, c, g, s, b, i in rows}


def advance(conn: Conn, srcs: Iterable[int]) -> set[GatewayKey]:
    """Fold committed runs into the marks of sources `srcs` (own transaction); return the gateways whose mark moved."""
    ordered = sorted(set(srcs))
    if not ordered:
        return set()
    # One round trip (a pipeline: BEGIN, SET, SELECT, COMMIT sent together).
    with conn.pipeline(), conn.transaction():
        # The marks are derived from seq_runs, which the load transaction committed durably; this
        # commit need not wait for its WAL flush. A crash can lose a mark update (and the deletion of
        # the runs it folded, in the same transaction), never an event: the mark is recomputed from
        # the runs (stalled_keys), and a published mark only ever covered durably committed events.
        conn.execute("SET LOCAL synchronous_commit = off")
        # Binary parameter: no text rendering and parsing of thousands of ids per call.
        cur = conn.execute("SELECT o_district, o_community, o_gateway, o_changed FROM advance_sources(%b::int8[])",
                           (ordered,))
    rows = cur.fetchall()
    return {GatewayKey(str(r[0]), str(r[1]), str(r[2])) for r in rows if r[3]}


def apply_statuses(conn: Conn, statuses: Sequence[StatusRow]) -> set[int]:
    """Record each status's `seq.last` and close gaps below its `seq.floor`; return the sources to advance."""
    keys: list[SourceKey] = []
    floors: list[int | None] = []
    lasts: list[int | None] = []
    for st in statuses:
        if st.boot is None:
            continue
        for source in set(st.floors) | set(st.last):
            keys.append(SourceKey(st.gw, source, st.boot))
            floors.append(st.floors.get(source))
            lasts.append(st.last.get(source))
    if not keys:
        return set()
    with conn.transaction():
        rows = conn.execute("SELECT o_src FROM apply_status_seqs(%s, %s, %s, %s, %s, %s, %s)",
                            (*_columns(keys), floors, lasts)).fetchall()
    return {int(str(r[0])) for r in rows}


def marks_of(conn: Conn, gateways: Iterable[GatewayKey]) -> dict[GatewayKey, tuple[int, dict[str, int]]]:
    """Per gateway, (newest boot, {source: mark}) as published on `{base}/ack`."""
    gws = sorted(set(gateways), key=lambda g: (g.district, g.community, g.gateway))
    if not gws:
        return {}
    rows = conn.execute(
        "WITH g AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(d, c, g)), "
        "nb AS (SELECT m.district, m.community, m.gateway, max(m.boot) AS boot FROM marks m "
        "       JOIN g ON m.district = g.d AND m.community = g.c AND m.gateway = g.g "
        "       GROUP BY 1, 2, 3) "
        "SELECT m.district, m.community, m.gateway, m.boot, m.source, m.seq FROM marks m "
        "JOIN nb ON m.district = nb.district AND m.community = nb.community AND m.gateway = nb.gateway "
        "AND m.boot = nb.boot",
        ([g.district for g in gws], [g.community for g in gws], [g.gateway for g in gws])).fetchall()
    conn.rollback()
    out: dict[GatewayKey, tuple[int, dict[str, int]]] = {}
    per: dict[GatewayKey, dict[str, int]] = defaultdict(dict)
    boots: dict[GatewayKey, int] = {}
    for d, c, g, boot, source, seq in rows:
        key = GatewayKey(str(d), str(c), str(g))
        boots[key] = int(str(boot))
        per[key][str(source)] = int(str(seq))
    for key, marks in per.items():
        out[key] = (boots[key], marks)
    return out


def ack_body(boot: int, marks: dict[str, int]) -> bytes:
    """The retained watermark message body."""
    return json.dumps({"boot": boot, "marks": marks}, sort_keys=True, separators=(",", ":")).encode()


def stalled_keys(conn: Conn) -> set[int]:
    """Sources whose next seq has arrived but whose mark did not advance (a worker died between commit and advance)."""
    rows = conn.execute("SELECT DISTINCT r.src FROM seq_runs r JOIN marks m ON m.src = r.src "
                        "WHERE r.lo <= m.seq + 1").fetchall()
    conn.rollback()
    return {int(str(r[0])) for r in rows}


def due_replays(conn: Conn, grace_s: float, interval_s: float) -> list[ReplayRequest]:
    """Claim the gaps open longer than `grace_s` (and not asked about for `interval_s`): one worker wins each."""
    with conn.transaction():
        rows = conn.execute(
            "WITH due AS (SELECT district, community, gateway, source, boot FROM marks "
            "  WHERE gap_since IS NOT NULL AND gap_since < now() - make_interval(secs => %s) "
            "  AND (last_replay_at IS NULL OR last_replay_at < now() - make_interval(secs => %s)) "
            "  FOR UPDATE SKIP LOCKED) "
            "UPDATE marks m SET last_replay_at = now(), replays = m.replays + 1 FROM due "
            "WHERE m.district = due.district AND m.community = due.community AND m.gateway = due.gateway "
            "AND m.source = due.source AND m.boot = due.boot "
            "RETURNING m.district, m.community, m.gateway, m.source, m.boot, m.seq, "
            "  (SELECT min(r.lo) FROM seq_runs r WHERE r.src = m.src AND r.lo > m.seq), "
            "  m.reported_last",
            (grace_s, interval_s)).fetchall()
    out = []
    for d, c, g, s, b, mark, next_lo, rep_last in rows:
        first = int(str(mark)) + 1
        if next_lo is None and rep_last is None:
            continue
        last = int(str(next_lo)) - 1 if next_lo is not None else int(str(rep_last))
        if last >= first:
            out.append(ReplayRequest(GatewayKey(str(d), str(c), str(g)), str(s), int(str(b)), first, last))
    return out
