"""The pieces the chaos runs lean on, tested on their own: read cursors, seq floors, resend backoff,
the row tally, the status body, the two lanes after an outage, and a torn file on open."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from edge.configbase import BackoffConfig
from edge.errors import OutboxError
from edge.outbox import Covered, Outbox, OutboxLimits
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Event, Origin
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._chaos import ORIGIN, Subscriber, observations, wait_until
from tests.conftest import Broker


def _events(n: int, start: int = 0) -> list[Event]:
    boundary = PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin(*ORIGIN))
    return [boundary.to_event(o) for o in observations(n, start)]


def test_pending_after_reads_forward_skipping_rows_in_flight(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ids = [r.row_id for r in ob.append(_events(10)).records]
    assert [r.row_id for r in ob.pending_after(0, 3)] == ids[:3]
    assert [r.row_id for r in ob.pending_after(ids[2], 3, exclude={ids[3]})] == ids[4:7]
    assert [r.row_id for r in ob.pending_after(0, 100, upto=ids[4])] == ids[:5]
    ob.mark_sent(ids[:2])
    assert [r.row_id for r in ob.pending_after(0, 2, unsent_only=True)] == ids[2:4]
    assert ob.newest_row_id() == ids[-1]


def test_changed_sees_commits_of_other_connections_only(tmp_path: Path) -> None:
    reader = Outbox(tmp_path / "o.db")
    writer = Outbox(tmp_path / "o.db")
    reader.changed()
    assert not reader.changed()
    writer.append(_events(1))
    assert reader.changed() and not reader.changed()


def test_seq_floor_tells_what_left_the_outbox_for_good(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", limits=OutboxLimits(max_events=100))
    ob.append(_events(80))
    assert ob.seq_floor() == {s: 1 for s in ("cam1", "cam2", "reader1", "sniffer1")}
    ob.append(_events(80, 80))  # 60 dropped by the quota: the lowest priority kinds first
    floors, last = ob.seq_floor(), ob.last_seq()
    assert floors["sniffer1"] > 1 and floors["reader1"] == 1
    rows = ob.pending(1000)
    for source, floor in floors.items():
        held = sorted(r.seq for r in rows if r.source_id == source)
        assert (held[0] if held else last[source] + 1) == floor


def test_resends_back_off_per_attempt(tmp_path: Path) -> None:
    now = [1000.0]
    ob = Outbox(tmp_path / "o.db", clock=lambda: now[0])
    ids = [r.row_id for r in ob.append(_events(4)).records]
    ob.mark_sent(ids)  # attempt 1 at t=1000
    assert ob.unsend_overdue(1009.0, 10.0) == 0
    assert ob.unsend_overdue(1011.0, 10.0) == 4
    now[0] = 1011.0
    ob.mark_sent(ids)  # attempt 2: now waits 2 × 10 s
    assert ob.unsend_overdue(1025.0, 10.0) == 0
    assert ob.unsend_overdue(1032.0, 10.0) == 4
    assert ob.counters()["resent"] == 8


def test_held_resends_wait_for_a_mark_past_them_or_the_bound(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    early = ob.append(_events(4)).records
    ob.mark_sent([r.row_id for r in early], 1000.0)
    late = ob.append(_events(4, 4)).records
    ob.mark_sent([r.row_id for r in late], 1005.0)
    # Overdue, but no mark has moved (passed_ts None) or none past them: held.
    assert ob.unsend_overdue(1020.0, 10.0, hold_s=80.0) == 0
    assert ob.unsend_overdue(1020.0, 10.0, hold_s=80.0, passed_ts=999.0) == 0
    assert ob.count_overdue(1020.0, 10.0) == 8
    # The watermark covered a row sent at 1000: the rows sent then (or before) were lost; later ones wait.
    covered = ob.ack_watermark(early[0].source_id, ob.boot, early[0].seq)
    assert covered == Covered(1, 1000.0)
    assert ob.unsend_overdue(1020.0, 10.0, hold_s=80.0, passed_ts=covered.newest_sent_ts) == 3
    assert ob.count_overdue(1020.0, 10.0) == 4
    # A mark that covers nothing new (already deleted) or rows never sent says nothing.
    assert ob.ack_watermark(early[0].source_id, ob.boot, early[0].seq) == Covered(0, None)
    # The bound: 80 s after their send the held rows go out whatever the marks say.
    assert ob.unsend_overdue(1084.0, 10.0, hold_s=80.0) == 0
    assert ob.unsend_overdue(1086.0, 10.0, hold_s=80.0) == 4
    assert ob.counters()["resent"] == 7 and ob.count_overdue(1086.0, 10.0) == 0
    # Sent twice: the copy the platform stored may be the first, so the second send time proves nothing.
    ob.mark_sent([r.row_id for r in late], 1090.0)
    assert ob.ack_watermark(late[0].source_id, ob.boot, late[0].seq) == Covered(1, None)


def test_row_tally_is_built_for_an_existing_file_and_stays_exact(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    ob.append(_events(30))
    ob.close()
    # An outbox file written before the tally existed: drop it, its triggers, and reopen.
    db = sqlite3.connect(path)
    db.executescript("DROP TRIGGER events_tally_ins; DROP TRIGGER events_tally_del; DROP TABLE tally;")
    db.close()
    ob = Outbox(path)
    assert ob.depth() == 30
    ob.delete([r.row_id for r in ob.pending(7)])
    ob.append(_events(5, 30))
    assert ob.depth() == 28 == len(ob.pending(1000))
    ob.close()


def test_locked_outbox_is_an_outbox_error_not_a_crash(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ob.append(_events(2))
    ob._db.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(tmp_path / "o.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        try:
            ob.delete([1])
        except OutboxError as exc:
            assert "locked" in str(exc)
        else:
            raise AssertionError("a locked database must raise OutboxError")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert ob.depth() == 2
    ob.close()


def test_status_body_has_what_the_platform_needs(tmp_path: Path, broker: Broker) -> None:
    ob = Outbox(tmp_path / "o.db", limits=OutboxLimits(max_events=100))
    ob.append(_events(150))
    ob.put_status("capture", {"cameras": {"cam1": {"state": "streaming"}}, "ports": {"reader1": {"open": True}}})
    up = Uplink(ob, Origin(*ORIGIN), MqttConfig(host=broker.host, port=broker.port),
                UplinkConfig(backoff=BackoffConfig(initial_s=0.05, max_s=0.3)))
    body = up.status(online=True)
    assert body["online"] is True and body["outbox_depth"] == 100 and body["oldest_pending_age_s"] is not None
    assert body["dropped"] == 50 and body["drops"]["quota"] == 50 and body["alarm"] is True
    assert body["alarms"] == ["outbox_quota"] and body["disk_full"] is False
    assert body["cameras"] == {"cam1": {"state": "streaming"}} and body["ports"] == {"reader1": {"open": True}}
    assert body["seq"]["last"] == ob.last_seq() and body["boot"] == ob.boot
    assert body["storage"]["used_bytes"] > 0 and body["storage"]["quota_bytes"] > 0
    assert body["uplink"]["protocol"] == "5" and body["uplink"]["ack_mode"] == "puback"
    ob.close()


def test_live_events_overtake_a_rate_limited_backlog(tmp_path: Path, broker: Broker) -> None:
    ob = Outbox(tmp_path / "o.db")
    backlog = [r for i in range(5) for r in ob.append(_events(100, i * 100)).records]
    sub = Subscriber(broker.port, client_id="platform")
    up = Uplink(ob, Origin(*ORIGIN), MqttConfig(host=broker.host, port=broker.port),
                UplinkConfig(window=32, backlog_rate=200.0, backoff=BackoffConfig(initial_s=0.05, max_s=0.3)))
    t = threading.Thread(target=up.run, daemon=True)
    start = time.monotonic()
    t.start()
    try:
        assert wait_until(lambda: len(sub.got) > 50, 10)
        t0 = time.monotonic()
        # Appended through a connection of its own, as the capture daemon does: the uplink's thread
        # owns `ob`'s connection (an Outbox is one connection, not for two threads at once).
        producer = Outbox(tmp_path / "o.db")
        try:
            live = producer.append(_events(8, 5000)).records
        finally:
            producer.close()
        assert not sub.wait_for({r.event_id for r in live}, 5)
        took = time.monotonic() - t0
        backlog_got = len(sub.ids() & {r.event_id for r in backlog})
        # Live events went out at once while the backlog was still draining at ~200 events/s.
        assert took < 1.5 and backlog_got < len(backlog)
        assert not sub.wait_for({r.event_id for r in backlog}, 30)
        drained_in = time.monotonic() - start
    finally:
        up.stop()
        t.join(10)
        sub.close()
    # The backlog lane kept its rate: 500 events at 200/s (plus a first window of tokens) take ~2.3 s,
    # not the tenth of a second an unlimited drain takes.
    assert drained_in > 1.8
    ob.close()


def test_uplink_survives_a_locked_outbox_and_keeps_acknowledgements(tmp_path: Path, broker: Broker) -> None:
    ob = Outbox(tmp_path / "o.db")
    sent = [r for i in range(4) for r in ob.append(_events(50, i * 50)).records]
    ob._db.execute("PRAGMA busy_timeout=100")
    sub = Subscriber(broker.port, client_id="platform")
    other = sqlite3.connect(tmp_path / "o.db", isolation_level=None)
    up = Uplink(ob, Origin(*ORIGIN), MqttConfig(host=broker.host, port=broker.port),
                UplinkConfig(window=16, backoff=BackoffConfig(initial_s=0.05, max_s=0.3)))
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    try:
        assert wait_until(lambda: len(sub.got) > 20, 10)
        other.execute("BEGIN EXCLUSIVE")  # e.g. a backup holding the file
        time.sleep(0.6)
        other.execute("ROLLBACK")
        assert not sub.wait_for({r.event_id for r in sent}, 20)
        assert wait_until(lambda: ob.depth() == 0, 10)
        assert t.is_alive()
    finally:
        other.close()
        up.stop()
        t.join(10)
        sub.close()
    ob.close()
