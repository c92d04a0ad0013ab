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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from district.messages import EventRow
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
        links = [str(x) for x in body.get("links") or []]
        if attrs.get("state") == "cleared":
            clears.append(_Alarm(e, code, target, attrs, links))
        elif code.endswith("_cleared"):  # the storage alarms close with a `<code>_cleared` event
            clears.append(_Alarm(e, code.removesuffix("_cleared"), target, attrs, links))
        else:
            raises.append(_Alarm(e, code, target, attrs, links))
    return raises, clears


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
    cur.execute("INSERT INTO case_history (case_id, at, actor, from_state, to_state, note) "
                "VALUES (%s, %s, %s, %s, %s, %s)", (case_id, now, SYSTEM, before, to, note))
    return str(case_id), str(before), auto, duration


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
