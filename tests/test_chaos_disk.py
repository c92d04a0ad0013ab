"""Chaos 4: the outbox reaches its quota, and the disk fills up.

- Quota (rows): the policy drops the oldest events of the lowest priority first, counts every drop
  by kind, commits an `alarm` event, and the retained status carries the flag; once the backlog
  drains, commits go through again with no further drops.
- Disk full (SQLITE_FULL, simulated with PRAGMA max_page_count through `file_cap_bytes`): commits
  fail with OutboxFullError, capture retries and drops nothing, the status says `disk_full`, and
  when the uplink frees pages every event held in capture's hands is committed and delivered.
- Disk short (free space below the reserve): the byte quota shrinks, and the same policy applies.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from edge import outbox as outbox_mod
from edge.configbase import BackoffConfig
from edge.errors import OutboxError
from edge.events import PRIORITY
from edge.outbox import Outbox, OutboxFullError, OutboxLimits
from edge.pipeline.commit import Committer
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import EventKind, Origin
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._chaos import ORIGIN, Subscriber, observations, producer, wait_until
from tests.conftest import Broker

FAST = UplinkConfig(window=16, status_interval_s=0.3, backoff=BackoffConfig(initial_s=0.05, max_s=0.3))


def _uplink(ob: Outbox, broker: Broker) -> tuple[Uplink, threading.Thread]:
    up = Uplink(ob, Origin(*ORIGIN), MqttConfig(host=broker.host, port=broker.port), FAST)
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    return up, t


def test_quota_reached_while_offline_policy_counts_alarm_status_and_recovery(tmp_path: Path, broker: Broker) -> None:
    db = tmp_path / "outbox.db"
    # A real capture process commits 1000 mixed events into a 300-event outbox while the broker is unreachable.
    prod = producer(db, tmp_path, "--count", "1000", "--batch", "20", "--max-events", "300")
    assert prod.wait(120) == 0, prod.log_path.read_text()[-2000:]
    acked = prod.ids()
    prod.stop()
    assert len(acked) == 1000  # every commit returned: the quota never blocks capture
    ob = Outbox(db, limits=OutboxLimits(max_events=300))  # the uplink runs under the same config
    rows = ob.pending(10_000)
    counters = ob.counters()
    by_kind = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("dropped_quota.")}
    alarms = [json.loads(r.payload) for r in rows if r.kind is EventKind.ALARM]
    # Counted exactly: every committed event is either still here or counted as dropped.
    assert ob.depth() <= 300
    assert counters["dropped_quota"] == 1000 + len(alarms) - ob.depth() == sum(by_kind.values())
    # Policy: lowest priority first. A kind was dropped only if no lower-priority event survived it.
    kept = {r.kind.value for r in rows}
    for kind in by_kind:
        assert not any(PRIORITY[EventKind(k)] < PRIORITY[EventKind(kind)] for k in kept), (kind, kept)
    assert "device_aggregate" in by_kind and EventKind.CARD_SWIPE.value in kept
    # Oldest first within a kind: the survivors of a partly dropped kind are its newest.
    survivors = {r.event_id for r in rows}
    for kind in by_kind:
        ids = [i for i, k in zip(acked, _kinds_of(1000), strict=True) if k == kind]
        kept_ids = [i for i in ids if i in survivors]
        assert kept_ids == ids[len(ids) - len(kept_ids):]
    # Never silently, and once: one alarm event for the episode (it used to be one per dropping commit);
    # the repeat comes only after `alarm_repeat_s` (300 s by default), the clearing once it drains.
    assert len(alarms) == 1 and alarms[0]["attrs"]["code"] == "outbox_quota", alarms
    assert 0 < alarms[0]["attrs"]["count"] <= counters["dropped_quota"]
    # The platform sees the flag and the counts in the retained status, then the backlog.
    sub = Subscriber(broker.port, client_id="platform")
    up, t = _uplink(ob, broker)
    try:
        assert wait_until(lambda: bool(sub.statuses), 10)
        assert wait_until(lambda: ob.depth() == 0, 30)
        raised = [s for s in sub.statuses if "outbox_quota" in s["alarms"]]
        assert raised and raised[0]["alarm"] is True and raised[0]["quota"]["alarm"] is True
        assert raised[0]["quota"]["dropped_since"] == counters["dropped_quota"]
        # Drained: the alarm clears (and the status says so at once); the counts stay on record.
        assert wait_until(lambda: "outbox_quota" not in sub.statuses[-1]["alarms"], 10)
        status = sub.statuses[-1]
        assert status["quota"]["alarm"] is False
        assert status["drops"]["quota"] == counters["dropped_quota"]
        assert status["drops"]["quota_by_kind"] == by_kind
        # Recovery: with room again, new commits drop nothing and are delivered.
        prod = producer(db, tmp_path, "--count", "200", "--batch", "20", "--max-events", "300", "--start", "1000")
        assert prod.wait(60) == 0
        more = set(prod.ids())
        prod.stop()
        assert not sub.wait_for(more | survivors, 30)
        assert ob.counters()["dropped_quota"] == counters["dropped_quota"]
    finally:
        up.stop()
        t.join(10)
        sub.close()
    ob.close()


def _kinds_of(n: int) -> list[str]:
    return [o.kind.value for o in observations(n)]


def test_disk_full_capture_retries_drops_nothing_and_recovers_when_the_uplink_frees_space(
        tmp_path: Path, broker: Broker) -> None:
    db = tmp_path / "outbox.db"
    boundary = PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin(*ORIGIN))
    Outbox(db).close()
    size = db.stat().st_size
    # The capture side's "disk": the file may grow by ~100 KiB, far less than what it will be given.
    cap = Outbox(db, limits=OutboxLimits(file_cap_bytes=size + 100 * 1024))
    committer = Committer(cap, boundary, BackoffConfig(initial_s=0.02, max_s=0.2))
    full_seen = threading.Event()
    done = threading.Event()
    batches = [observations(50, i * 50) for i in range(12)]

    def capture() -> None:
        for b in batches:
            committer.commit(b)  # retries with backoff until it fits; never drops
        done.set()

    ct = threading.Thread(target=capture, daemon=True)
    ct.start()
    view = Outbox(db)  # the uplink's connection (no cap): what it reports
    assert wait_until(lambda: view.storage().disk_full, 30), "never hit the cap"
    full_seen.set()
    depth_when_full = view.depth()
    time.sleep(0.5)
    assert committer.failures > 0 and not done.is_set()
    assert view.depth() == depth_when_full  # nothing dropped to make room
    assert view.counters().get("dropped_quota", 0) == 0 and view.counters()["full_errors"] >= 1
    sub = Subscriber(broker.port, client_id="platform")
    up, ut = _uplink(view, broker)
    try:
        assert wait_until(lambda: any(s.get("disk_full") for s in sub.statuses) or done.is_set(), 10)
        # Draining frees pages inside the file; capture's retries get through.
        assert wait_until(done.is_set, 60), "capture never recovered"
        committer.tick(time.time())  # a recovery alarm the still-short disk refused is retried here
        assert wait_until(lambda: view.depth() == 0, 30)
        total = sum(len(b) for b in batches)
        # Besides the events: one `disk_full` alarm per full episode, committed once space returned.
        assert committer.committed == total
        episodes = committer.alarms_committed
        assert episodes >= 1
        assert wait_until(lambda: len(sub.ids()) == total + episodes, 30)
        full_alarms = [json.loads(g.payload) for g in sub.got if g.source == "outbox"]
        assert len({a["event_id"] for a in full_alarms}) == episodes
        assert all(a["attrs"]["code"] == "disk_full" and a["attrs"]["count"] >= 1 for a in full_alarms)
        assert sum(a["attrs"]["count"] for a in {a["event_id"]: a for a in full_alarms}.values()) \
            == committer.full_refusals
        assert not view.storage().disk_full  # the flag clears with the first commit that fits
        up.publish_status(online=True)
        assert wait_until(lambda: sub.statuses and sub.statuses[-1]["disk_full"] is False, 10)
        assert sub.statuses[-1]["storage"]["full_errors"] >= 1  # the episode stays on record
    finally:
        up.stop()
        ut.join(10)
        sub.close()
    assert view.counters().get("dropped_quota", 0) == 0
    cap.close()
    view.close()


def test_full_append_raises_full_error_and_leaves_the_outbox_intact(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    boundary = PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin(*ORIGIN))
    Outbox(db).close()
    ob = Outbox(db, limits=OutboxLimits(file_cap_bytes=db.stat().st_size + 32 * 1024))
    committed = 0
    with pytest.raises(OutboxFullError):
        for i in range(100):
            committed += len(ob.append([boundary.to_event(o) for o in observations(20, i * 20)]).records)
    assert isinstance(OutboxFullError("x"), OutboxError)  # capture's retry loop catches it
    assert ob.depth() == committed and ob.integrity_ok()
    assert ob.last_seq() and sum(ob.last_seq().values()) == committed  # no seq burnt by the failed batch
    ob.close()


def test_disk_short_shrinks_the_quota_and_applies_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boundary = PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin(*ORIGIN))
    ob = Outbox(tmp_path / "outbox.db", limits=OutboxLimits(min_free_bytes=1024 * 1024))
    ob.append([boundary.to_event(o) for o in observations(200)])
    # The disk now has only the reserve left (something else filled it): the outbox may not grow.
    monkeypatch.setattr(outbox_mod, "_disk_free", lambda _p: 1024 * 1024)
    st = ob.storage()
    assert 0 <= st.quota_bytes - st.used_bytes < 64 * 1024  # only the file's own free pages are left
    res = ob.append([boundary.to_event(o) for o in observations(200, 200)])
    assert res.dropped and sum(res.dropped.values()) == ob.counters()["dropped_quota"]
    assert ob.storage().used_bytes <= st.quota_bytes
    assert "device_aggregate" in res.dropped
    ob.close()
