"""Cases: the states an alarm goes through on the platform, and the ingest step that opens and clears them.

The district's case flow (as in its 12345 / e线办 system) is 发现 → 上报 → 受理 → 分拨 → 处置 → 反馈 → 归档,
stored as the stable ASCII codes of `CaseState`. Every ingested `alarm` event (a `watch_hit` is an
alarm with that code) that raises a condition opens one case, keyed by the alarm's event_id, in the
same transaction that stores the event (`record_cases`, called by the loader): a replayed stream
opens nothing new. The gateway's clearing alarm for the same gateway, source, code and zone/input
is attached to the open case; for conditions that end by themselves (`AUTO_CLOSE`: a fire lane
obstruction that frees, an outbox quota that clears) it archives the case as actor `system` with
the duration. SOS, door and tamper cases stay open until a person closes them (`district.casedesk`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from district.messages import EventRow, GatewayKey
from district.partitions import day_bound
from district.platform_audit import append
from edge.compat import StrEnum

Cursor = psycopg.Cursor[tuple[object, ...]]


class CaseState(StrEnum):
    """A case's state (the ASCII code stored and exported; `LABELS` has the district's names)."""

    DISCOVERED = "discovered"
    REPORTED = "reported"
    ACCEPTED = "accepted"
    DISPATCHED = "dispatched"
    HANDLING = "handling"
    FEEDBACK = "feedback"
    ARCHIVED = "archived"


LABELS: dict[CaseState, str] = {
    CaseState.DISCOVERED: "发现", CaseState.REPORTED: "上报", CaseState.ACCEPTED: "受理",
    CaseState.DISPATCHED: "分拨", CaseState.HANDLING: "处置", CaseState.FEEDBACK: "反馈",
    CaseState.ARCHIVED: "归档",
}

# Moves a person may make. A dispatched case may be dispatched again (to another unit); a case that
# needed no unit may go from accepted straight to feedback. Only `system` archives from any state
# (a condition that cleared by itself), and nothing leaves `archived`.
TRANSITIONS: dict[CaseState, frozenset[CaseState]] = {
    CaseState.DISCOVERED: frozenset({CaseState.REPORTED}),
    CaseState.REPORTED: frozenset({CaseState.ACCEPTED}),
    CaseState.ACCEPTED: frozenset({CaseState.DISPATCHED, CaseState.FEEDBACK}),
    CaseState.DISPATCHED: frozenset({CaseState.DISPATCHED, CaseState.HANDLING, CaseState.FEEDBACK}),
    CaseState.HANDLING: frozenset({CaseState.FEEDBACK}),
    CaseState.FEEDBACK: frozenset({CaseState.ARCHIVED}),
    CaseState.ARCHIVED: frozenset(),
}

AUTO_CLOSE = frozenset({"obstruction", "outbox_quota"})
"""Codes whose clearing alarm archives the case: the condition ended and nobody has to act."""

SYSTEM = "system"


def allowed(src: CaseState, dst: CaseState) -> bool:
    """Whether a person may move a case from `src` to `dst`."""
    return dst in TRANSITIONS[src]


@dataclass(frozen=True, slots=True)
class _Alarm:
    row: EventRow
    code: str
    target: str
    attrs: dict[str, Any]
    links: list[str]


def _classify(events: Sequence[EventRow]) -> tuple[list[_Alarm], list[_Alarm]]:
    """(raising alarms, clearing alarms) among `events`; other kinds are not cases."""
    raises: list[_Alarm] = []
    clears: list[_Alarm] = []
    for e in events:
        if e.kind != "alarm":
            continue
        body = json.loads(e.payload)  # the validator already parsed it: valid JSON, schema-checked attrs
        attrs: dict[str, Any] = body.get("attrs") or {}
        code = str(attrs.get("code", ""))
        target = str(attrs.get("zone") or attrs.get("input") or "-")
        links = [str(u) for x in body.get("links") or [] if (u := _uuid(x)) is not None]
        if attrs.get("state") == "cleared":
            clears.append(_Alarm(e, code, target, attrs, links))
        elif code.endswith("_cleared"):  # the storage alarms close with a `<code>_cleared` event
            clears.append(_Alarm(e, code.removesuffix("_cleared"), target, attrs, links))
        else:
            raises.append(_Alarm(e, code, target, attrs, links))
    return raises, clears


def _uuid(value: object) -> uuid.UUID | None:
    # The schema only says "strings": anything else would make the whole batch's INSERT fail.
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _open(cur: Cursor, raises: Sequence[_Alarm], now: datetime) -> list[tuple[str, str, str]]:
    """Insert the cases (existing ones untouched); (case_id, code, gateway) of those really opened."""
    cols: list[list[Any]] = [[] for _ in range(20)]
    for a in raises:
        r, at = a.row, a.attrs
        values = (r.event_id, r.ts, now, r.gw.district, r.gw.community, r.gw.gateway, r.source, a.code,
                  at.get("severity"), a.target, str(at.get("message", ""))[:200], r.subject_pseudonym, r.key_id,
                  "{" + ",".join(a.links) + "}", at.get("list_id"), _opt_int(at.get("list_version")),
                  at.get("case_id"), at.get("id_kind"), CaseState.REPORTED.value, now)
        for col, v in zip(cols, values, strict=True):
            col.append(v)
    cur.execute(
        "INSERT INTO cases (case_id, opened_at, received_at, district, community, gateway, source, code, severity, "
        "target, message, subject_pseudonym, key_id, links, list_id, list_version, police_case, id_kind, state, "
        "updated_at) "
        "SELECT u.a, u.b, u.c, u.d, u.e, u.f, u.g, u.h, u.i, u.j, u.k, u.l, u.m, u.n::uuid[], u.o, u.p, u.q, u.r, "
        "u.s, u.t FROM unnest(%s::uuid[], %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], "
        "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
        "%s::int[], %s::text[], %s::text[], %s::text[], %s::timestamptz[]) "
        "AS u(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t) "
        "ON CONFLICT (case_id) DO NOTHING RETURNING case_id, opened_at, district, community, gateway, source, code",
        cols)
    opened = cur.fetchall()
    if not opened:
        return []
    # Two moves per case: the gateway discovered it (at the alarm's time), the platform received it.
    hist: list[tuple[object, ...]] = []
    for cid, opened_at, d, c, g, src, _code in opened:
        hist.append((cid, opened_at, f"gateway:{d}/{c}/{g}/{src}", None, CaseState.DISCOVERED.value, ""))
        hist.append((cid, now, SYSTEM, CaseState.DISCOVERED.value, CaseState.REPORTED.value, "ingested"))
    cur.executemany("INSERT INTO case_history (case_id, at, actor, from_state, to_state, note) "
                    "VALUES (%s, %s, %s, %s, %s, %s)", hist)
    return [(str(r[0]), str(r[6]), f"{r[2]}/{r[3]}/{r[4]}") for r in opened]


def _clear(cur: Cursor, a: _Alarm, now: datetime) -> tuple[str, str, bool, float] | None:
    """Attach one clearing alarm to the newest open case it clears; (case_id, state before, archived, s)."""
    r = a.row
    cur.execute(
        "SELECT case_id, state, opened_at FROM cases WHERE district = %s AND community = %s AND gateway = %s "
        "AND source = %s AND code = %s AND target = %s AND cleared_event_id IS NULL AND opened_at <= %s "
        "AND NOT EXISTS (SELECT 1 FROM cases x WHERE x.cleared_event_id = %s) "
        "ORDER BY opened_at DESC LIMIT 1 FOR UPDATE",
        (r.gw.district, r.gw.community, r.gw.gateway, r.source, a.code, a.target, r.ts, r.event_id))
    found = cur.fetchone()
    if found is None:
        return None  # replayed (already attached), or its raise never arrived
    case_id, before, opened_at = found
    reported = a.attrs.get("duration_s")
    if isinstance(reported, int | float) and not isinstance(reported, bool):
        duration = float(reported)
    else:
        duration = (r.ts - opened_at).total_seconds() if isinstance(opened_at, datetime) else 0.0
    auto = a.code in AUTO_CLOSE and before != CaseState.ARCHIVED.value
    cur.execute(
        "UPDATE cases SET cleared_event_id = %s, cleared_at = %s, duration_s = %s, updated_at = %s, "
        "state = CASE WHEN %s THEN 'archived' ELSE state END, "
        "closed_at = CASE WHEN %s THEN %s ELSE closed_at END, closed_by = CASE WHEN %s THEN %s ELSE closed_by END "
        "WHERE case_id = %s",
        (r.event_id, r.ts, duration, now, auto, auto, now, auto, SYSTEM, case_id))
    if auto:
        note, to = f"cleared at the gateway after {duration:.0f} s: closed automatically", CaseState.ARCHIVED.value
    else:
        note, to = f"cleared at the gateway after {duration:.0f} s; stays open until closed by a person", str(before)
    hist = [(case_id, now, SYSTEM, before, to, note)]
    if a.code in AUTO_CLOSE:
        # A condition that repeats while it lasts (the quota alarm) opened a case per repeat: the one
        # clear ends them all.
        cur.execute(
            "UPDATE cases SET state = 'archived', closed_at = %s, closed_by = %s, updated_at = %s "
            "WHERE district = %s AND community = %s AND gateway = %s AND source = %s AND code = %s AND target = %s "
            "AND cleared_event_id IS NULL AND state <> 'archived' AND opened_at <= %s RETURNING case_id, "
            "(SELECT state FROM cases o WHERE o.case_id = cases.case_id)",
            (now, SYSTEM, now, r.gw.district, r.gw.community, r.gw.gateway, r.source, a.code, a.target, r.ts))
        hist += [(cid, now, SYSTEM, str(old), CaseState.ARCHIVED.value, "closed with the clearing of a later repeat")
                 for cid, old in cur.fetchall()]
    cur.executemany("INSERT INTO case_history (case_id, at, actor, from_state, to_state, note) "
                    "VALUES (%s, %s, %s, %s, %s, %s)", hist)
    return str(case_id), str(before), auto, duration


def _stored_clear(cur: Cursor, case_id: str, code: str, gw_path: str) -> _Alarm | None:
    """A clearing alarm for a case just opened that arrived (and was stored) before it, if any.

    The live lane keeps a gateway's alarms in order, but a raise refused once and resent later, or a
    redelivery after a worker died, can land after its clear; without this the case would stay open.
    """
    cur.execute("SELECT opened_at, source, target FROM cases WHERE case_id = %s AND cleared_event_id IS NULL",
                (case_id,))
    row = cur.fetchone()
    if row is None:
        return None
    opened_at, source, target = row
    if not isinstance(opened_at, datetime):
        return None
    district, community, gateway = gw_path.split("/")
    clear_code = f"{code}_cleared"
    cur.execute(
        # The gateway by its id (migration 0010): the key of the events' gateway + time index.
        "SELECT event_id, ts, source, boot, seq, payload::text FROM events WHERE gateway_id = "
        "(SELECT id FROM gateways WHERE gateway = %s AND district = %s AND community = %s) "
        "AND source = %s AND kind = 'alarm' AND ts >= %s AND event_id >= %s "
        "AND ((payload->'attrs'->>'code' = %s AND payload->'attrs'->>'state' = 'cleared') "
        "     OR payload->'attrs'->>'code' = %s) "
        "AND coalesce(payload->'attrs'->>'zone', payload->'attrs'->>'input', '-') = %s "
        "AND NOT EXISTS (SELECT 1 FROM cases c WHERE c.cleared_event_id = events.event_id) "
        "ORDER BY ts LIMIT 1",
        (gateway, district, community, source, opened_at, day_bound(opened_at.date()), code, clear_code, target))
    found = cur.fetchone()
    if found is None:
        return None
    event_id, ts, src, boot, seq, text = found
    if not isinstance(ts, datetime) or not isinstance(event_id, uuid.UUID):
        return None
    attrs = json.loads(str(text)).get("attrs") or {}
    row_ = EventRow(event_id, ts, GatewayKey(district, community, gateway), str(src), int(str(boot)), int(str(seq)),
                    "alarm", None, None, None, str(text))
    return _Alarm(row_, code, str(target), attrs, [])


def record_cases(cur: Cursor, events: Sequence[EventRow], now: datetime) -> int:
    """Open a case for every raising alarm in `events` and attach every clearing one (the loader's step).

    Runs inside the batch's transaction, after the events are stored: the case exists exactly when
    its event does. Idempotent by event_id: a resent raise opens nothing, a resent clear clears
    nothing. Every case opened or closed here is written to the platform's audit chain, in the same
    transaction. Returns the number of cases opened.
    """
    raises, clears = _classify(events)
    if not raises and not clears:
        return 0
    opened = _open(cur, raises, now) if raises else []
    cleared = []
    for a in sorted(clears, key=lambda x: (x.row.ts, str(x.row.event_id))):
        # In time order, so a raise, its clear and the next raise in one batch pair up correctly.
        got = _clear(cur, a, now)
        if got is not None:
            cleared.append(got)
    for cid, code, gw_path in opened:
        late = _stored_clear(cur, cid, code, gw_path)
        if late is not None and (got := _clear(cur, late, now)) is not None:
            cleared.append(got)
    conn = cur.connection
    if opened:
        append(conn, SYSTEM, "case_open", {"cases": [{"case_id": cid, "code": code, "gateway": gw,
                                                     "state": CaseState.REPORTED.value}
                                                    for cid, code, gw in opened]})
    if cleared:
        append(conn, SYSTEM, "case_cleared", {"cases": [
            {"case_id": cid, "from": before, "to": CaseState.ARCHIVED.value if auto else before,
             "duration_s": round(duration, 1)} for cid, before, auto, duration in cleared]})
    return len(opened)
