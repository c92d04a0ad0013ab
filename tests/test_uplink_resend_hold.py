"""End-to-end mode against a real mosquitto: the gateway holds its timeout resends while the platform is away.

The test plays the platform: it publishes the watermark (`{base}/ack`) and replay requests
(`{base}/replay`) itself and counts what the gateway publishes. The uplink runs on a thread with a
clock of the test's own that moves only when the test moves it, so "ack_timeout_s later" and "the
hold's bound later" are exact, and every row of one burst is sent at the same instant.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.configbase import BackoffConfig
from edge.events import base_topic
from edge.outbox import Outbox
from edge.types import OutboxRecord
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._chaos import wait_until
from tests._events import ORIGIN, events
from tests._mqtt import Collector
from tests.conftest import Broker

TIMEOUT_S = 10.0
HOLD_S = 80.0  # the default bound: 8 x ack_timeout_s
BASE = base_topic(ORIGIN, "edgegw")


@dataclass
class Gateway:
    """An outbox, its uplink on a thread, the test's clock and the platform's view of the broker."""

    path: Path
    outbox: Outbox
    uplink: Uplink
    platform: Collector
    now: list[float]
    records: list[OutboxRecord]

    def advance(self, seconds: float) -> None:
        """Move the uplink's clock and wait until its housekeeping has looked for overdue rows at that time."""
        self.now[0] += seconds
        # Its next look is due `ack_timeout_s / 4` of its clock after the last one, which a frozen
        # clock never reaches: make it due now, until a look at exactly this time has set the next.
        due = self.now[0] + TIMEOUT_S / 4

        def looked() -> bool:
            if self.uplink._next_resend == due:
                return True
            self.uplink._next_resend = 0.0
            return False

        assert wait_until(looked, 10)

    def received(self) -> Counter[str]:
        """How many times the platform received each event id."""
        return Counter(m.json()["event_id"] for m in self.platform.events())

    def unsent(self) -> int:
        """Rows the uplink has to publish (never sent, or marked for a resend)."""
        with sqlite3.connect(self.path) as db:
            return int(db.execute("SELECT COUNT(*) FROM events WHERE sent_ts IS NULL").fetchone()[0])

    def held(self) -> int:
        """Rows still held in the outbox."""
        with sqlite3.connect(self.path) as db:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def publish(self, topic: str, body: dict[str, object], *, retain: bool) -> None:
        """Publish as the platform does (QoS 1)."""
        self.platform.client.publish(f"{BASE}/{topic}", json.dumps(body), qos=1, retain=retain).wait_for_publish(5)

    def mark(self, marks: dict[str, int]) -> None:
        """The platform's retained watermark, as its ingest worker publishes it after a commit."""
        self.publish("ack", {"boot": self.outbox.boot, "marks": marks}, retain=True)

    def last_seq(self, source: str) -> int:
        """The highest seq of `source` this test committed."""
        return max(r.seq for r in self.records if r.source_id == source)


@contextmanager
def _gateway(tmp_path: Path, broker: Broker, *, bursts: int = 3, **cfg: float) -> Iterator[Gateway]:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    records = [r for _ in range(bursts) for r in ob.append(events()).records]
    now = [time.time()]
    ucfg = UplinkConfig(window=16, ack_mode="end_to_end", ack_timeout_s=TIMEOUT_S, status_interval_s=0.5,
                        backoff=BackoffConfig(initial_s=0.05, max_s=0.3), **cfg)  # type: ignore[arg-type]
    platform = Collector(broker.host, broker.port, client_id="test-platform")
    up = Uplink(ob, ORIGIN, MqttConfig(host=broker.host, port=broker.port), ucfg, clock=lambda: now[0])
    thread = threading.Thread(target=up.run, daemon=True)
    thread.start()
    gw = Gateway(path, ob, up, platform, now, records)
    try:
        # The whole backlog is published once, all of it at the same instant of the uplink's clock.
        assert wait_until(lambda: len(gw.platform.events()) >= len(records) and gw.unsent() == 0, 20)
        assert set(gw.received().values()) == {1}
        yield gw
    finally:
        up.stop()
        thread.join(10)
        platform.close()
        ob.close()


def test_no_mark_moves_no_resend_until_the_bound_then_a_resend(tmp_path: Path, broker: Broker) -> None:
    with _gateway(tmp_path, broker) as gw:
        n = len(gw.records)
        gw.advance(TIMEOUT_S + 1)  # overdue: without the hold, everything would go out again now
        assert wait_until(lambda: gw.uplink.stats.resends_held == n, 5)
        time.sleep(0.3)
        assert sum(gw.received().values()) == n  # nothing was sent again
        assert gw.outbox.counters().get("resent", 0) == 0
        uplink = gw.uplink.status(online=True)["uplink"]
        assert uplink["resends_held"] == n and uplink["resend_hold_since"] == pytest.approx(gw.now[0])
        # A republished mark that covers nothing new (the platform reconnecting) does not end the hold.
        gw.mark({"cam1": 0})
        gw.advance(HOLD_S - TIMEOUT_S - 2)  # 1 s short of the bound
        time.sleep(0.3)
        assert sum(gw.received().values()) == n and gw.uplink.stats.resends_held == n
        gw.advance(2)  # past the bound: a platform that is up but lost everything gets it all again
        assert wait_until(lambda: set(gw.received().values()) == {2}, 20), gw.received()
        assert gw.outbox.counters()["resent"] == n
        assert wait_until(lambda: gw.uplink.stats.resend_hold_since is None, 5)


def test_marks_moving_for_other_events_resend_the_overdue_at_the_normal_timeout(tmp_path: Path,
                                                                                 broker: Broker) -> None:
    with _gateway(tmp_path, broker) as gw:
        # The platform stores every source but cam1 (its messages were lost on the way): those marks move.
        others = {r.source_id for r in gw.records} - {"cam1"}
        gw.mark({s: gw.last_seq(s) for s in others})
        cam1 = {r.event_id for r in gw.records if r.source_id == "cam1"}
        assert wait_until(lambda: gw.held() == len(cam1), 5)
        gw.advance(TIMEOUT_S - 1)
        time.sleep(0.3)
        assert sum(gw.received().values()) == len(gw.records)  # not due yet
        gw.advance(2)  # ack_timeout_s after the send: resent, not held
        assert wait_until(lambda: {e for e, c in gw.received().items() if c == 2} == cam1, 10), gw.received()
        assert gw.outbox.counters()["resent"] == len(cam1)
        assert gw.uplink.stats.resends_held == 0 and gw.uplink.stats.resend_hold_since is None


def test_a_mark_covering_only_older_sends_holds_the_newer(tmp_path: Path, broker: Broker) -> None:
    """What the platform stored was sent before the overdue rows: they may still be queued, so held."""
    with _gateway(tmp_path, broker, bursts=1) as gw:
        first = {s: gw.last_seq(s) for s in {r.source_id for r in gw.records}}
        gw.advance(5)
        capture = Outbox(gw.path)  # committed by another connection, as the capture daemon does
        later = capture.append(events()).records  # sent 5 s after the first burst
        capture.close()
        assert wait_until(lambda: len(gw.platform.events()) >= len(gw.records) + len(later) and gw.unsent() == 0, 10)
        gw.mark(first)  # covers the first burst only
        assert wait_until(lambda: gw.held() == len(later), 5)
        gw.advance(TIMEOUT_S + 1)
        assert wait_until(lambda: gw.uplink.stats.resends_held == len(later), 5)
        assert gw.outbox.counters().get("resent", 0) == 0
        # Now it stores a row of the later burst: the rest of that burst was lost, and goes out again.
        gw.mark({"reader1": max(r.seq for r in later if r.source_id == "reader1")})
        gw.advance(1)
        lost = {r.event_id for r in later if r.source_id != "reader1"}
        assert wait_until(lambda: {e for e, c in gw.received().items() if c == 2} == lost, 10), gw.received()
        assert gw.uplink.stats.resends_held == 0


def test_replay_requests_are_not_held(tmp_path: Path, broker: Broker) -> None:
    with _gateway(tmp_path, broker) as gw:
        n = len(gw.records)
        gw.advance(TIMEOUT_S + 1)
        assert wait_until(lambda: gw.uplink.stats.resends_held == n, 5)
        # The platform saw a gap in cam1 (seq 2..4) and asks for it: it goes out at once, the rest stays held.
        gw.publish("replay", {"boot": gw.outbox.boot, "source": "cam1", "from": 2, "to": 4}, retain=False)
        asked = {r.event_id for r in gw.records if r.source_id == "cam1" and 2 <= r.seq <= 4}
        assert len(asked) == 3
        assert wait_until(lambda: {e for e, c in gw.received().items() if c == 2} == asked, 10), gw.received()
        assert gw.outbox.counters()["replayed"] == 3 and gw.outbox.counters().get("resent", 0) == 0
        gw.advance(1)
        assert wait_until(lambda: gw.uplink.stats.resends_held == n - 3, 5)


def test_the_hold_can_be_turned_off_and_is_validated() -> None:
    assert UplinkConfig(ack_timeout_s=30).resend_hold_s == 240.0
    assert UplinkConfig(ack_timeout_s=30, resend_hold_max_s=600).resend_hold_s == 600.0
    assert UplinkConfig(ack_timeout_s=30, resend_hold_max_s=0).resend_hold_s == 0.0
    with pytest.raises(ValidationError, match=r"at least uplink\.ack_timeout_s"):
        UplinkConfig(ack_timeout_s=30, resend_hold_max_s=10)
    with pytest.raises(ValidationError):
        UplinkConfig(resend_hold_max_s=-1)


def test_without_a_hold_overdue_rows_go_out_at_the_timeout(tmp_path: Path, broker: Broker) -> None:
    with _gateway(tmp_path, broker, bursts=1, resend_hold_max_s=0) as gw:
        gw.advance(TIMEOUT_S + 1)
        assert wait_until(lambda: set(gw.received().values()) == {2}, 10), gw.received()
        assert gw.uplink.stats.resends_held == 0
