"""Cases over real PostgreSQL: alarms open them in the load transaction, clears close them (obstruction)
or annotate them (SOS), people move them through 发现 → … → 归档 with refusals, every move is audited,
replays open nothing, and the export's cursor skips nothing — not even a change that commits late."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from district.casedesk import CaseDesk, CaseError, CaseRefusal
from district.cases import AUTO_CLOSE, LABELS, TRANSITIONS, CaseState
from district.config import DatabaseConfig, IngestConfig
from district.db import connect
from district.messages import Parsed, parse
from district.platform_audit import verify
from district.simulate import event, payload
from district.store import Store
from tests.district.conftest import Database

GW = ("dl-gjz", "c0001", "gw01")


def alarm(source: str, seq: int, ts: float, *, gateway: str = "gw01", links: list[str] | None = None,
          **attrs: Any) -> Parsed:
    """An `alarm` event as a gateway publishes it, parsed by the platform's own parser."""
    obj = event(GW[0], GW[1], gateway, source, 1, seq, ts=ts, kind="alarm")
    obj["attrs"] = {"message": f"{attrs.get('code')} {attrs.get('state', '')}".strip(), **attrs}
    if links:
        obj["links"] = links
    return parse(f"edgegw/{GW[0]}/{GW[1]}/{gateway}/events/alarm", payload(obj))


def obstruction(seq: int, ts: float, state: str, duration: float, zone: str = "lane-1") -> Parsed:
    return alarm("cam1", seq, ts, code="obstruction", rule="obstruction", zone=zone, severity="warning",
                 state=state, covered=0.42, duration_s=duration)


def sos(seq: int, ts: float, state: str, **extra: Any) -> Parsed:
    return alarm("io-gate1", seq, ts, code="alarm_column", input="sos-east", meaning="alarm_column",
                 severity="critical", state=state, **extra)


@pytest.fixture
def store(pg: Database) -> Iterator[Store]:
    s = Store(DatabaseConfig(dsn=pg.dsn), IngestConfig(accept_past_days=3650, accept_future_days=3650))
    yield s
    s.close()


@pytest.fixture
def desk(pg: Database) -> CaseDesk:
    return CaseDesk(lambda: connect(pg.dsn))


def _event_id(p: Parsed) -> str:
    return str(getattr(p, "event_id"))  # noqa: B009  # Parsed is a union; these are EventRows


def _counts(pg: Database) -> tuple[object, ...]:
    return pg.query("SELECT (SELECT count(*) FROM cases), (SELECT count(*) FROM case_history), "
                    "(SELECT count(*) FROM audit_log)")[0]


def test_the_state_table_is_the_districts_flow() -> None:
    assert [LABELS[s] for s in CaseState] == ["发现", "上报", "受理", "分拨", "处置", "反馈", "归档"]
    assert TRANSITIONS[CaseState.ARCHIVED] == frozenset()
    assert "alarm_column" not in AUTO_CLOSE and "door_contact" not in AUTO_CLOSE and "tamper" not in AUTO_CLOSE


def test_an_obstruction_that_clears_closes_its_case_with_the_duration(pg: Database, store: Store,
                                                                      desk: CaseDesk) -> None:
    t0 = time.time() - 600
    raised = obstruction(1, t0, "raised", 300.0)
    store.write([raised, alarm("cam2", 1, t0, code="dwell", rule="dwell", zone="gate", state="raised",
                               duration_s=31.0)])
    case = desk.show(_event_id(raised))
    assert (case.state, case.state_label, case.code, case.target, case.source) == (
        "reported", "上报", "obstruction", "lane-1", "cam1")
    assert [(h.actor, h.from_state, h.to_state) for h in case.history] == [
        ("gateway:dl-gjz/c0001/gw01/cam1", None, "discovered"), ("system", "discovered", "reported")]
    store.write([obstruction(2, t0 + 420, "cleared", 420.0)])
    case = desk.show(_event_id(raised))
    assert (case.state, case.closed_by, case.duration_s) == ("archived", "system", 420.0)
    assert case.closed_at is not None and case.cleared_at is not None
    assert case.history[-1].actor == "system" and case.history[-1].to_state == "archived"
    assert "420 s" in case.history[-1].note
    # The dwell case at another camera is untouched by that clear.
    assert [c.state for c in desk.find(state=CaseState.REPORTED)] == ["reported"]
    actions = [r[0] for r in pg.query("SELECT action FROM audit_log ORDER BY seq")]
    assert actions == ["case_open", "case_cleared"]  # one record per batch, naming every case it moved
    opened = json.loads(str(pg.scalar("SELECT details FROM audit_log WHERE action = 'case_open'")))
    assert sorted((c["code"], c["state"]) for c in opened["cases"]) == [("dwell", "reported"),
                                                                        ("obstruction", "reported")]
    details = json.loads(str(pg.scalar("SELECT details FROM audit_log WHERE action = 'case_cleared'")))
    assert details["cases"] == [{"case_id": case.case_id, "from": "reported", "to": "archived", "duration_s": 420.0}]
    # Archived by the system: nobody can move it any more.
    with pytest.raises(CaseError) as info:
        desk.claim(case.case_id, actor="officer-0042", officer="0042")
    assert info.value.reason is CaseRefusal.CONFLICT
    with connect(pg.dsn) as conn:
        assert verify(conn).ok


def test_sos_stays_open_until_a_person_closes_it_and_bad_moves_are_refused(pg: Database, store: Store,
                                                                           desk: CaseDesk) -> None:
    t0 = time.time() - 120
    press = sos(1, t0, "raised")
    store.write([press, sos(2, t0 + 4, "cleared", duration_s=4.0)])
    cid = _event_id(press)
    case = desk.show(cid)
    assert case.state == "reported" and case.duration_s == 4.0 and case.closed_at is None
    assert case.history[-1].from_state == case.history[-1].to_state == "reported"
    assert "stays open" in case.history[-1].note
    before = _counts(pg)
    refused = [
        (lambda: desk.dispatch(cid, actor="p", officer="0042", unit="wuye-1"), CaseRefusal.CONFLICT),  # not claimed
        (lambda: desk.handle(cid, actor="p", officer="0042"), CaseRefusal.CONFLICT),
        (lambda: desk.close(cid, actor="p", officer="0042", note="done"), CaseRefusal.CONFLICT),
        (lambda: desk.claim(cid, actor="p", officer=""), CaseRefusal.INVALID),
        (lambda: desk.claim(cid, actor="system", officer="0042"), CaseRefusal.INVALID),  # reserved
        (lambda: desk.claim("not-a-uuid", actor="p", officer="0042"), CaseRefusal.INVALID),
        (lambda: desk.claim(str(uuid.uuid4()), actor="p", officer="0042"), CaseRefusal.NOT_FOUND),
    ]
    for move, reason in refused:
        with pytest.raises(CaseError) as info:
            move()
        assert info.value.reason is reason, info.value
    assert _counts(pg) == before  # a refused move writes nothing, not even history
    desk.claim(cid, actor="officer-0042", officer="0042", note="on it")
    with pytest.raises(CaseError, match=r"accepted \(受理\); it cannot be moved to accepted"):
        desk.claim(cid, actor="officer-0042", officer="0042")
    desk.dispatch(cid, actor="officer-0042", officer="0042", unit="security-east")
    desk.dispatch(cid, actor="officer-0042", officer="0042", unit="security-west", note="east team busy")
    desk.handle(cid, actor="officer-0042", officer="0042")
    with pytest.raises(CaseError):
        desk.close(cid, actor="officer-0042", officer="0042", note="  ")  # the feedback is required
    case = desk.close(cid, actor="officer-0042", officer="0042", note="resident fell; ambulance called")
    assert (case.state, case.officer, case.unit, case.closed_by) == ("archived", "0042", "security-west", "0042")
    assert [h.to_state for h in case.history] == ["discovered", "reported", "reported", "accepted", "dispatched",
                                                 "dispatched", "handling", "feedback", "archived"]
    assert case.history[-2].note == "resident fell; ambulance called"
    audit = pg.query("SELECT actor, action, details FROM audit_log ORDER BY seq")
    moves = [(a, act, json.loads(str(d))["to"]) for a, act, d in audit if str(act).startswith("case_")
             and act not in ("case_open", "case_cleared")]
    assert moves == [("officer-0042", "case_claim", "accepted"), ("officer-0042", "case_dispatch", "dispatched"),
                     ("officer-0042", "case_dispatch", "dispatched"), ("officer-0042", "case_handle", "handling"),
                     ("officer-0042", "case_close", "archived")]
    with connect(pg.dsn) as conn:
        assert verify(conn).ok


def test_a_replayed_stream_opens_no_second_case(pg: Database, store: Store, desk: CaseDesk) -> None:
    t0 = time.time() - 3600
    batch = [obstruction(1, t0, "raised", 300.0), obstruction(2, t0 + 600, "cleared", 600.0),
             obstruction(3, t0 + 900, "raised", 300.0), sos(1, t0 + 5, "raised"),
             alarm("outbox", 1, t0 + 7, code="outbox_quota", severity="warning", count=3)]
    store.write(batch)
    first = _counts(pg)
    states = {c.case_id: c.state for c in desk.find()}
    assert sorted(states.values()) == ["archived", "reported", "reported", "reported"]
    # The raise, its clear and the next raise in one batch: the clear closed the first only.
    assert states[_event_id(batch[0])] == "archived" and states[_event_id(batch[2])] == "reported"
    store.write(batch)            # the whole stream again (the stage path: every id is a duplicate)
    for item in batch:            # and one by one, the clear alone included
        store.write([item])
    store.write(list(reversed(batch)))
    assert _counts(pg) == first
    assert {c.case_id: c.state for c in desk.find()} == states
    # The quota's clearing event (a `<code>_cleared` alarm) archives its case; a second clear finds nothing open.
    store.write([alarm("outbox", 2, t0 + 60, code="outbox_quota_cleared", severity="info", count=3)])
    quota = desk.show(_event_id(batch[4]))
    assert quota.state == "archived" and quota.duration_s == pytest.approx(53.0, abs=0.01)
    store.write([alarm("outbox", 3, t0 + 70, code="outbox_quota_cleared", severity="info", count=0)])
    assert pg.scalar("SELECT count(*) FROM cases WHERE code = 'outbox_quota'") == 1


def test_a_watch_hit_opens_a_case_linked_to_its_list_and_police_case(store: Store, desk: CaseDesk) -> None:
    swipe_id = str(uuid.uuid4())
    hit = alarm("reader1", 1, time.time(), code="watch_hit", severity="critical", id_kind="card", list_id="wl-1",
                list_version=2, case_id="C-2026-117", links=[swipe_id])
    store.write([hit])
    case = desk.show(_event_id(hit))
    assert (case.code, case.list_id, case.list_version, case.police_case, case.id_kind, case.links) == (
        "watch_hit", "wl-1", 2, "C-2026-117", "card", [swipe_id])
    assert case.state == "reported" and case.severity == "critical"


def test_the_export_cursor_pages_and_never_skips_a_change_that_commits_late(pg: Database, store: Store,
                                                                          desk: CaseDesk) -> None:
    t0 = time.time() - 60
    alarms = [sos(i, t0 + i, "raised") for i in range(1, 6)]
    store.write(alarms[:3])
    store.write(alarms[3:])
    page = desk.export(0)
    assert {c.case_id for c in page.cases} == {_event_id(a) for a in alarms} and not page.more
    assert all(len(c.history) == 2 for c in page.cases)
    assert desk.export(page.cursor).cases == []
    # Pages cut at a transaction boundary: a limit of 1 still returns the whole first batch.
    small = desk.export(0, limit=1)
    assert small.more and len(small.cases) == 3
    rest = desk.export(small.cursor, limit=1)
    assert {c.case_id for c in rest.cases} == {_event_id(a) for a in alarms[3:]}
    cursor = page.cursor
    # A move that takes its transaction id first and commits last, and one that commits in between.
    late = psycopg.connect(pg.dsn)
    try:
        late_xid = int(str(late.execute("SELECT pg_current_xact_id()::text::bigint").fetchall()[0][0]))
        a, b = _event_id(alarms[0]), _event_id(alarms[1])
        desk.claim(b, actor="officer-0042", officer="0042")
        seen = desk.export(cursor)
        # The later transaction is held back while the earlier one is open: the cursor does not pass it.
        assert seen.cases == [] and seen.cursor <= late_xid
        late.execute("INSERT INTO case_history (case_id, actor, from_state, to_state, note) "
                     "VALUES (%s, 'officer-0043', 'reported', 'reported', 'late note')", (a,))
        late.commit()
    finally:
        late.close()
    after = desk.export(seen.cursor)
    assert {c.case_id for c in after.cases} == {a, b}
    assert desk.export(after.cursor).cases == []
    assert after.cursor > cursor
    with pytest.raises(CaseError):
        desk.export(-1)


def test_a_clear_stored_before_its_raise_still_closes_the_case(pg: Database, store: Store, desk: CaseDesk) -> None:
    t0 = time.time() - 1800
    raised, cleared = obstruction(1, t0, "raised", 300.0), obstruction(2, t0 + 900, "cleared", 900.0)
    store.write([cleared])  # the raise was refused once and is resent after its clear
    assert pg.scalar("SELECT count(*) FROM cases") == 0
    store.write([raised])
    case = desk.show(_event_id(raised))
    assert (case.state, case.duration_s, case.closed_by) == ("archived", 900.0, "system")
    before = _counts(pg)
    store.write([cleared, raised])
    assert _counts(pg) == before


def test_a_repeating_quota_alarm_is_closed_whole_by_its_clear(pg: Database, store: Store, desk: CaseDesk) -> None:
    t0 = time.time() - 600
    first, repeat = (alarm("outbox", 1, t0, code="outbox_quota", severity="warning", count=5),
                     alarm("outbox", 2, t0 + 60, code="outbox_quota", severity="warning", count=9))
    store.write([first, repeat])
    store.write([alarm("outbox", 3, t0 + 100, code="outbox_quota_cleared", severity="info", count=14)])
    states = {c.case_id: (c.state, c.duration_s) for c in desk.find()}
    assert states[_event_id(first)][0] == "archived" and states[_event_id(repeat)][0] == "archived"
    assert states[_event_id(repeat)][1] == pytest.approx(40.0, abs=0.01)  # the newest carries the clear
    older = desk.show(_event_id(first))
    assert older.history[-1].note == "closed with the clearing of a later repeat"
    assert older.history[-1].from_state == "reported"


def test_a_malformed_link_does_not_cost_the_alarm(store: Store, desk: CaseDesk) -> None:
    good = str(uuid.uuid4())
    hit = alarm("reader1", 1, time.time(), code="watch_hit", severity="critical", id_kind="card", list_id="wl-1",
                list_version=1, case_id="C-1", links=["not-a-uuid", good, "x}{,"])
    assert store.write([hit]).inserted == 1
    assert desk.show(_event_id(hit)).links == [good]
