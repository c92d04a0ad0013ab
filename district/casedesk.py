"""The case desk: list, show and move cases (claim, dispatch, handle, close), and the polling export.

Every move checks the transition table (`district.cases.TRANSITIONS`) under a row lock, writes the
case history and appends the move to the platform's audit chain, all in one transaction: a refused
move (`CaseError`, reason `conflict`) changes nothing and is not a history entry.

The export is what a district's own case system polls: `export(since)` returns every case that
changed since the cursor, with its whole history, and the cursor to ask with next. The cursor is a
PostgreSQL transaction id (xid8): the export only returns changes of transactions older than its
snapshot's xmin, all of which have finished, so a change that commits late is never skipped (a
sequence number can be: it is taken before the commit). Cases carry pseudonyms only, never a raw
plate, card or MAC (the platform never has one).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any

import psycopg
from pydantic import Field

from district.cases import LABELS, SYSTEM, CaseState, allowed
from district.errors import DistrictError
from district.platform_audit import append
from edge.compat import UTC, StrEnum

Conn = psycopg.Connection[tuple[object, ...]]
_CASE_COLUMNS = ("case_id, opened_at, received_at, district, community, gateway, source, code, severity, target, "
                 "state, message, subject_pseudonym, key_id, links, list_id, list_version, police_case, id_kind, "
                 "officer, unit, cleared_at, duration_s, closed_at, closed_by, updated_at")
_MAX_NOTE = 500


class CaseRefusal(StrEnum):
    """Why a case request was refused."""

    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # the transition is not allowed from the case's state
    INVALID = "invalid"


class CaseError(DistrictError):
    """A case request was refused; `reason` is a CaseRefusal."""

    def __init__(self, reason: CaseRefusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One move of a case."""

    id: int
    at: str
    actor: str
    from_state: str | None
    to_state: str
    note: str
    unit: str | None


@dataclass(frozen=True, slots=True)
class Case:
    """A case as listed, shown and exported (pseudonyms only).

    The one declaration of a case's fields: the HTTP API's `CaseOut` (`district.cases_api`) is this
    class seen by pydantic, and the `Field` descriptions are what its OpenAPI schema says of them.
    """

    case_id: Annotated[str, Field(description="stable: the event_id of the alarm that opened the case")]
    opened_at: str
    received_at: str
    district: str
    community: str
    gateway: str
    source: str
    code: Annotated[str, Field(description="the alarm's code: obstruction, alarm_column, door_contact, tamper, "
                                           "watch_hit, ...")]
    severity: str | None
    target: Annotated[str, Field(description="the zone or input the alarm is about ('-' if none)")]
    state: str
    state_label: str
    message: str
    subject_pseudonym: str | None
    key_id: str | None
    links: Annotated[list[str], Field(description="watch_hit: the event ids of the matched passage(s)")]
    list_id: str | None
    list_version: int | None
    police_case: Annotated[str | None, Field(description="watch_hit: the police case id of the watch-list")]
    id_kind: str | None
    officer: str | None
    unit: str | None
    cleared_at: str | None
    duration_s: float | None
    closed_at: str | None
    closed_by: str | None
    updated_at: str
    history: Sequence[HistoryEntry]  # a list; Sequence lets CaseOut narrow the entry type

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CaseExport:
    """One page of the export: the cases changed since the cursor, and the cursor to ask with next."""

    cursor: int
    more: bool
    cases: list[Case]


def _iso(value: object) -> str | None:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else None


def _case_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise CaseError(CaseRefusal.INVALID, "a case id is a UUID (the id of the alarm that opened it)") from None


def _text(value: str, what: str, *, required: bool = False, limit: int = 64) -> str:
    value = value.strip()
    if required and not value:
        raise CaseError(CaseRefusal.INVALID, f"{what} is required")
    if len(value) > limit or any(ord(ch) < 32 for ch in value):
        raise CaseError(CaseRefusal.INVALID, f"{what} is at most {limit} printable characters")
    return value


class CaseDesk:
    """Reads and moves cases; `connect` gives it a connection per call."""

    def __init__(self, connect: Callable[[], Conn]) -> None:
        self._connect = connect

    # -- reading -----------------------------------------------------------------------------------
    def find(self, *, state: CaseState | None = None, open_only: bool = False, limit: int = 100) -> list[Case]:
        """Cases, newest first, optionally in one state or not archived; each with its history."""
        where, params = [], []
        if state is not None:
            where.append("state = %s")
            params.append(state.value)
        if open_only:
            where.append("state <> 'archived'")
        sql = (f"SELECT {_CASE_COLUMNS} FROM cases {'WHERE ' + ' AND '.join(where) if where else ''} "  # noqa: S608
               "ORDER BY opened_at DESC, case_id LIMIT %s")
        with self._connect() as conn:
            rows = conn.execute(sql.encode(), [*params, max(1, min(limit, 10_000))]).fetchall()
            return self._with_history(conn, rows)

    def show(self, case_id: str) -> Case:
        """One case with its history; CaseError(not_found) if there is none."""
        cid = _case_id(case_id)
        with self._connect() as conn:
            return self._one(conn, cid)

    def _one(self, conn: Conn, cid: uuid.UUID) -> Case:
        rows = conn.execute(f"SELECT {_CASE_COLUMNS} FROM cases WHERE case_id = %s".encode(),  # noqa: S608
                            (cid,)).fetchall()
        if not rows:
            raise CaseError(CaseRefusal.NOT_FOUND, f"no case {cid}")
        return self._with_history(conn, rows)[0]

    @staticmethod
    def _with_history(conn: Conn, rows: Sequence[tuple[object, ...]]) -> list[Case]:
        ids = [r[0] for r in rows]
        history: dict[str, list[HistoryEntry]] = {str(i): [] for i in ids}
        if ids:
            for hid, cid, at, actor, src, dst, note, unit in conn.execute(
                    "SELECT id, case_id, at, actor, from_state, to_state, note, unit FROM case_history "
                    "WHERE case_id = ANY(%s) ORDER BY id", (ids,)).fetchall():
                history[str(cid)].append(HistoryEntry(int(str(hid)), _iso(at) or "", str(actor),
                                                      None if src is None else str(src), str(dst), str(note),
                                                      None if unit is None else str(unit)))
        out = []
        for r in rows:
            (cid, opened, received, d, c, g, src, code, sev, target, state, msg, pseud, key_id, links, list_id,
             list_version, police_case, id_kind, officer, unit, cleared, duration, closed, closed_by, updated) = r
            out.append(Case(
                case_id=str(cid), opened_at=_iso(opened) or "", received_at=_iso(received) or "", district=str(d),
                community=str(c), gateway=str(g), source=str(src), code=str(code),
                severity=None if sev is None else str(sev), target=str(target), state=str(state),
                state_label=LABELS[CaseState(str(state))], message=str(msg),
                subject_pseudonym=None if pseud is None else str(pseud), key_id=None if key_id is None else str(key_id),
                links=[str(x) for x in links] if isinstance(links, list) else [],
                list_id=None if list_id is None else str(list_id),
                list_version=None if list_version is None else int(str(list_version)),
                police_case=None if police_case is None else str(police_case),
                id_kind=None if id_kind is None else str(id_kind), officer=None if officer is None else str(officer),
                unit=None if unit is None else str(unit), cleared_at=_iso(cleared),
                duration_s=float(duration) if isinstance(duration, int | float) else None, closed_at=_iso(closed),
                closed_by=None if closed_by is None else str(closed_by), updated_at=_iso(updated) or "",
                history=history[str(cid)]))
        return out

    # -- moving ------------------------------------------------------------------------------------
    def claim(self, case_id: str, *, actor: str, officer: str, note: str = "") -> Case:
        """上报 → 受理: the officer takes the case."""
        return self._move(case_id, "claim", [CaseState.ACCEPTED], actor=actor, officer=officer, note=note)

    def dispatch(self, case_id: str, *, actor: str, officer: str, unit: str, note: str = "") -> Case:
        """受理 → 分拨 (or 分拨 again, to another unit): send a unit."""
        unit = _text(unit, "the unit", required=True)
        return self._move(case_id, "dispatch", [CaseState.DISPATCHED], actor=actor, officer=officer, note=note,
                          unit=unit)

    def handle(self, case_id: str, *, actor: str, officer: str, note: str = "") -> Case:
        """分拨 → 处置: the unit is on it."""
        return self._move(case_id, "handle", [CaseState.HANDLING], actor=actor, officer=officer, note=note)

    def close(self, case_id: str, *, actor: str, officer: str, note: str) -> Case:
        """→ 反馈 → 归档: record the outcome (the note is the feedback) and archive."""
        note = _text(note, "the closing note (the feedback)", required=True, limit=_MAX_NOTE)
        return self._move(case_id, "close", [CaseState.FEEDBACK, CaseState.ARCHIVED], actor=actor, officer=officer,
                          note=note)

    def _move(self, case_id: str, action: str, steps: Sequence[CaseState], *, actor: str, officer: str,
              note: str, unit: str | None = None) -> Case:
        cid = _case_id(case_id)
        officer = _text(officer, "the officer id", required=True)
        note = _text(note, "the note", limit=_MAX_NOTE)
        if actor == SYSTEM:
            raise CaseError(CaseRefusal.INVALID, "'system' is reserved for the platform's own moves")
        with self._connect() as conn:
            with conn.transaction():
                row = conn.execute("SELECT state FROM cases WHERE case_id = %s FOR UPDATE", (cid,)).fetchone()
                if row is None:
                    raise CaseError(CaseRefusal.NOT_FOUND, f"no case {cid}")
                start = state = CaseState(str(row[0]))
                if state is CaseState.FEEDBACK and steps[0] is CaseState.FEEDBACK:
                    steps = steps[1:]  # the feedback is in already: closing only archives
                who = officer or actor
                for dst in steps:
                    if not allowed(state, dst):
                        raise CaseError(CaseRefusal.CONFLICT,
                                        f"case {cid} is {state.value} ({LABELS[state]}); it cannot be moved to "
                                        f"{dst.value} ({LABELS[dst]}) — {action} is refused")
                    conn.execute("INSERT INTO case_history (case_id, actor, from_state, to_state, note, unit) "
                                 "VALUES (%s, %s, %s, %s, %s, %s)", (cid, who, state.value, dst.value, note,
                                                                     unit if dst is CaseState.DISPATCHED else None))
                    state = dst
                archived = state is CaseState.ARCHIVED
                conn.execute(
                    "UPDATE cases SET state = %s, updated_at = now(), "
                    "officer = CASE WHEN %s THEN %s ELSE officer END, unit = coalesce(%s, unit), "
                    "closed_at = CASE WHEN %s THEN now() ELSE closed_at END, "
                    "closed_by = CASE WHEN %s THEN %s ELSE closed_by END WHERE case_id = %s",
                    (state.value, action == "claim", officer, unit, archived, archived, who, cid))
                details: dict[str, Any] = {"case_id": str(cid), "officer": officer, "from": start.value,
                                           "to": state.value}
                if unit is not None:
                    details["unit"] = unit
                append(conn, actor, f"case_{action}", details)
            return self._one(conn, cid)

    # -- export ------------------------------------------------------------------------------------
    def export(self, since: int = 0, *, limit: int = 500) -> CaseExport:
        """Cases changed in transactions at or after `since`, each whole; `cursor` is the next `since`."""
        if since < 0:
            raise CaseError(CaseRefusal.INVALID, "the cursor is a non-negative integer")
        limit = max(1, min(limit, 5000))
        with self._connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot for the whole page
            with conn.transaction():
                row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
                horizon = int(str(row[0])) if row else since
                changes = conn.execute(
                    "SELECT txid::text::bigint, case_id FROM case_history "
                    "WHERE txid >= %s::text::xid8 AND txid < %s::text::xid8 ORDER BY txid, id",
                    (str(since), str(max(horizon, since)))).fetchall()
                order: dict[str, None] = {}
                cursor, more, last_tx = max(horizon, since), False, None
                for tx, cid in changes:
                    t = int(str(tx))
                    if len(order) >= limit and t != last_tx:
                        cursor, more = t, True  # cut at a transaction boundary: all of t comes next time
                        break
                    order[str(cid)] = None
                    last_tx = t
                cases: list[Case] = []
                if order:
                    rows = conn.execute(f"SELECT {_CASE_COLUMNS} FROM cases WHERE case_id = ANY(%s)".encode(),  # noqa: S608
                                        ([uuid.UUID(c) for c in order],)).fetchall()
                    by_id = {c.case_id: c for c in self._with_history(conn, rows)}
                    cases = [by_id[c] for c in order if c in by_id]
        return CaseExport(cursor, more, cases)
