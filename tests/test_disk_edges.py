"""Delivery at the edges of the disk (issue 17): a short disk, a full disk, and the quota alarm.

The disk cases run on a real, small tmpfs the test mounts (root only), filled with a ballast file:
- short disk, broker up: the free space is below the reserve (something else ate it); live events
  still flow and none is dropped (the old quota allowed the outbox no growth at all, so every burst
  dropped live events);
- outage on a small disk with the passage store growing beside the outbox: the outbox sheds by the
  drop policy before the disk fills, so no commit is refused and the passage store never fails (the
  old quota counted only the outbox file, the WALs and the store ate the reserve, the disk filled);
- completely full disk: visible from outside the disk (the status says disk_full from the free space,
  the uplink remembers since when), the passage store counts what it missed and records it once space
  returns, and one disk_full alarm event arrives then.
The quota alarm runs on a fake clock: raised once, repeated at the interval with counts, cleared.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.app.config import Config, GatewayConfig
from edge.app.uplink import gateway_status
from edge.audit import AuditLog
from edge.configbase import BackoffConfig
from edge.outbox import Outbox, OutboxLimits
from edge.passages.config import PassageConfig
from edge.passages.store import PassageStore
from edge.pipeline.commit import Committer
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import EventKind, Origin
from edge.uplink.config import MqttConfig, UplinkConfig
from edge.uplink.uplink import Uplink
from tests._chaos import ORIGIN, Subscriber, observations, wait_until
from tests.conftest import Broker

MiB = 1024 * 1024
FAST = UplinkConfig(window=16, status_interval_s=0.3, backoff=BackoffConfig(initial_s=0.05, max_s=0.3))
BOUNDARY = PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin(*ORIGIN))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs mounted for this test (a real filesystem that really fills up).

    As root, or through passwordless sudo (CI runners); owned by the test's user either way.
    """
    mnt = tmp_path / "disk"
    mnt.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    opts = f"size=24m,mode=0700,uid={os.getuid()},gid={os.getgid()}"
    mounted = subprocess.run([*sudo, "mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or passwordless sudo): {mounted.stderr.strip()}; "
                    "the quota tests in test_chaos_disk.py still cover the policy")
    try:
        yield mnt
    finally:
        subprocess.run([*sudo, "umount", "-l", str(mnt)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _ballast(disk: Path, leave: int) -> Path:
    """Fill `disk` until only `leave` bytes are free (0: completely full)."""
    path = disk / "ballast"
    with path.open("ab") as f:
        chunk = b"\0" * (256 * 1024)
        while (room := _free(disk) - leave) > 0:
            try:
                f.write(chunk[:min(len(chunk), room)])
                f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return path


def _uplink(ob: Outbox, broker: Broker) -> tuple[Uplink, threading.Thread]:
    up = Uplink(ob, Origin(*ORIGIN), MqttConfig(host=broker.host, port=broker.port), FAST)
    t = threading.Thread(target=up.run, daemon=True)
    t.start()
    return up, t


def _store(disk: Path) -> tuple[PassageStore, AuditLog]:
    audit = AuditLog(disk / "audit.db")
    store = PassageStore.open(disk / "passages.db", disk / "passage-keys.db", b"d" * 32,
                              PassageConfig(purge_interval_s=0), audit)
    return store, audit


def test_short_disk_with_the_broker_up_drops_no_live_event(small_disk: Path, broker: Broker) -> None:
    limits = OutboxLimits(min_free_bytes=8 * MiB, live_bytes=4 * MiB)
    ob = Outbox(small_disk / "outbox.db", limits=limits)
    _ballast(small_disk, 6 * MiB)  # less free than the reserve: the outbox may not grow a backlog
    committer = Committer(ob, BOUNDARY, BackoffConfig(initial_s=0.02, max_s=0.2))
    sub = Subscriber(broker.port, client_id="platform")
    up, t = _uplink(Outbox(small_disk / "outbox.db", limits=limits), broker)
    try:
        for i in range(100):
            committer.commit(observations(30, i * 30))  # 3,000 live events in bursts
        assert wait_until(lambda: len(sub.ids()) == 3000, 60), len(sub.ids())
    finally:
        up.stop()
        t.join(10)
        sub.close()
    assert ob.counters().get("dropped_quota", 0) == 0
    assert committer.failures == 0 and committer.alarms_committed == 0
    ob.close()


def test_outage_on_a_small_disk_sheds_by_policy_and_never_fills_it(small_disk: Path) -> None:
    reserve = 2 * MiB
    store, audit = _store(small_disk)
    dbs = (small_disk / "passages.db", small_disk / "passage-keys.db", small_disk / "audit.db")
    ob = Outbox(small_disk / "outbox.db", limits=OutboxLimits(min_free_bytes=reserve, state_databases=dbs))
    committer = Committer(ob, BOUNDARY, BackoffConfig(initial_s=0.02, max_s=0.2), [store])
    lowest = _free(small_disk)
    # The broker is down: 12,000 events (a quarter card swipes, which the passage store records).
    for i in range(400):
        committer.commit(observations(30, i * 30))
        lowest = min(lowest, _free(small_disk))
    dropped = ob.counters().get("dropped_quota", 0)
    assert dropped > 0  # the disk is too small for this outage: the policy sheds ...
    assert committer.failures == 0 and committer.full_refusals == 0  # ... before any commit is refused
    assert store.failures == 0 and store.missed == 0  # and the passage store never hit a full disk
    assert store.stored == 9000  # every face, plate and card event is on record for the police queries
    assert lowest >= reserve // 2, lowest  # the reserve held (its WAL headroom was set aside)
    counters = ob.counters()
    assert counters["dropped_quota.device_aggregate"] > 0  # lowest priority first
    assert counters.get("dropped_quota.card_swipe", 0) < counters["dropped_quota.device_aggregate"]
    assert EventKind.CARD_SWIPE in {r.kind for r in ob.pending(100_000)}
    st = ob.storage()
    assert st.state_bytes > st.used_bytes and st.wal_headroom_bytes >= 0 and st.reserve_bytes == reserve
    assert st.bytes_per_event is not None and st.bytes_per_event > 100
    store.close()
    audit.close()
    ob.close()


def test_full_disk_is_visible_from_outside_the_disk_and_nothing_is_missed(small_disk: Path, broker: Broker) -> None:
    store, audit = _store(small_disk)
    ob = Outbox(small_disk / "outbox.db", limits=OutboxLimits(min_free_bytes=0, live_bytes=MiB))
    committer = Committer(ob, BOUNDARY, BackoffConfig(initial_s=0.02, max_s=0.1), [store])
    for i in range(30):
        committer.commit(observations(100, i * 100, kinds="cards"))
    view = Outbox(small_disk / "outbox.db")  # the uplink's connection
    # As on the chaos run's gateway: the outbox has room inside its own files (a WAL that SQLite reuses
    # from its start, pages freed by delivered rows), the passage store has none (its WAL was
    # checkpointed away), and something else fills the disk completely.
    view.delete([r.row_id for r in view.pending(100_000)])
    view._db.execute("PRAGMA wal_checkpoint(RESTART)")
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ballast = _ballast(small_disk, 0)
    assert _free(small_disk) < 64 * 1024
    sub = Subscriber(broker.port, client_id="platform")
    up, t = _uplink(view, broker)
    done = threading.Event()

    def capture() -> None:
        for i in range(10):
            committer.commit(observations(40, 3000 + i * 40, kinds="cards"))
        done.set()

    ct = threading.Thread(target=capture, daemon=True)
    try:
        # The uplink drains what was there, which frees pages inside the outbox file: capture's
        # commits fit there, but the passage store (a file that must grow) cannot write.
        ct.start()
        assert wait_until(lambda: store.missed > 0 or done.is_set(), 30)
        assert wait_until(lambda: any(s["disk_full"] and "disk_full" in s["alarms"] for s in sub.statuses), 10)
        body = up.status(online=True)
        assert body["disk_full"] is True and body["storage"]["full_since"] is not None
        assert body["storage"]["disk_free_bytes"] < 256 * 1024
        # `edgegw status` opens the outbox on the full disk and says the same.
        local, _ = gateway_status(Config(gateway=GatewayConfig(district=ORIGIN[0], community=ORIGIN[1],
                                                               gateway=ORIGIN[2], data_dir=small_disk)))
        assert local["disk_full"] is True and "disk_full" in local["alarms"]
        assert local["storage"]["state_bytes"] > 0
        assert store.failures > 0 and store.health()["backlog"] == store.missed
        # Space returns.
        ballast.unlink()
        assert wait_until(done.is_set, 60), "capture never recovered"
        committer.commit(observations(1, 10_000, kinds="cards"))  # queued behind the store's backlog
        # Capture ticks every 200 ms; the store retries its backlog at most once a second.
        assert wait_until(lambda: (committer.tick(time.time()), store.health()["backlog"] == 0)[1], 10, step=0.2)
        health = store.health()
        assert health["backlog"] == 0 and health["lost"] == 0 and health["recorded_late"] == store.missed
        assert store.counts()["records"] == 3401  # every swipe is on record, late ones too
        assert wait_until(lambda: not up.status(online=True)["disk_full"], 10)
        if committer.full_refusals:  # commits that met the full disk are reported in one alarm event
            assert wait_until(lambda: any(g.source == "outbox" for g in sub.got), 20)
    finally:
        up.stop()
        t.join(10)
        sub.close()
        with contextlib.suppress(RuntimeError):
            ct.join(30)
    store.close()
    audit.close()
    view.close()
    ob.close()


class _Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_quota_alarm_raised_once_repeated_with_counts_and_cleared(tmp_path: Path) -> None:
    clock = _Clock()
    ob = Outbox(tmp_path / "outbox.db", limits=OutboxLimits(max_events=300, min_free_bytes=0), clock=clock)
    committer = Committer(ob, BOUNDARY, BackoffConfig(initial_s=0.02, max_s=0.1), alarm_repeat_s=60.0, clock=clock)

    def alarms() -> list[tuple[str, int]]:
        import json
        return [(json.loads(r.payload)["attrs"]["code"], json.loads(r.payload)["attrs"]["count"])
                for r in ob.pending(100_000) if r.kind is EventKind.ALARM]

    for i in range(50):  # 1,000 events into 300: dozens of dropping commits within 50 s
        committer.commit(observations(20, i * 20))
        clock.t += 1.0
    first = alarms()
    assert [c for c, _ in first] == ["outbox_quota"], first  # once, not once per dropping commit
    assert ob.quota_state().active
    clock.t += 60.0  # past the repeat interval: the next drop repeats the alarm, with the count since
    committer.commit(observations(20, 1000))
    codes = alarms()
    assert [c for c, _ in codes] == ["outbox_quota", "outbox_quota"], codes
    dropped = ob.counters()["dropped_quota"]
    assert sum(n for _, n in codes) == committer.quota_alarm.total - committer.quota_alarm.unreported
    # The backlog drains (the uplink deletes what the broker acknowledged): the alarm clears, once.
    ob.delete([r.row_id for r in ob.pending(100_000) if r.kind is not EventKind.ALARM])
    assert not ob.quota_state().active
    committer.tick(clock())
    committer.tick(clock() + 5)
    committer.commit(observations(20, 2000))
    final = [c for c, _ in alarms()]
    assert final == ["outbox_quota", "outbox_quota", "outbox_quota_cleared"], final
    cleared = alarms()[-1][1]
    assert cleared == dropped + (ob.counters()["dropped_quota"] - dropped)  # the episode's total
    assert committer.quota_alarm.raised_at is None
    # Quiet again: more commits raise nothing.
    committer.commit(observations(20, 3000))
    assert len(alarms()) == 3
    ob.close()


def test_status_and_check_say_how_long_an_outage_the_free_space_buys(tmp_path: Path) -> None:
    from edge.app.commission import _disk
    from edge.uplink.stats import UplinkStats
    from edge.uplink.status import status_body

    clock = _Clock()
    ob = Outbox(tmp_path / "outbox.db", limits=OutboxLimits(max_bytes=8 * MiB, min_free_bytes=0), clock=clock)
    assert ob.storage().outage_s is None  # no rate yet
    for i in range(120):  # 2 events/s for two minutes
        ob.append([BOUNDARY.to_event(o) for o in observations(2, i * 2)])
        clock.t += 1.0
    st = ob.storage()
    assert st.rate_eps is not None and abs(st.rate_eps - 2.0) < 0.05
    assert st.bytes_per_event is not None and st.outage_s is not None
    # The room under the 8 MiB quota, at 2 events/s of this size.
    assert st.outage_s == pytest.approx((st.quota_bytes - st.used_bytes) / (st.rate_eps * st.bytes_per_event))
    body = status_body(ob, Origin(*ORIGIN), UplinkConfig(), UplinkStats(), online=True, protocol="5", now=clock())
    assert body["storage"]["outage_hours"] == round(st.outage_s / 3600.0, 2) > 0
    assert body["storage"]["rate_eps"] == round(st.rate_eps, 3) and body["storage"]["state_bytes"] > 0
    ob.close()
    cfg = Config(gateway=GatewayConfig(district=ORIGIN[0], community=ORIGIN[1], gateway=ORIGIN[2], data_dir=tmp_path),
                 outbox={"max_mb": 8})
    line = _disk(cfg)  # the real clock: the fake clock's history is far in the past, so no rate now
    assert "outage buffer" in line and "state files" in line


def test_a_capture_that_stopped_reporting_and_a_passage_store_backlog_raise_alarms(tmp_path: Path) -> None:
    from edge.uplink.stats import UplinkStats
    from edge.uplink.status import status_body

    clock = _Clock()
    ob = Outbox(tmp_path / "outbox.db", limits=OutboxLimits(min_free_bytes=0), clock=clock)

    def body() -> dict[str, object]:
        return status_body(ob, Origin(*ORIGIN), UplinkConfig(), UplinkStats(), online=True, protocol="5",
                           now=clock())

    ob.put_status("capture", {"passages": {"missed": 0, "backlog": 0, "lost": 0}})
    assert body()["alarms"] == []
    ob.put_status("capture", {"passages": {"missed": 12, "backlog": 12, "lost": 0}})
    assert body()["alarms"] == ["passage_store"] and body()["passages"] == {"missed": 12, "backlog": 12, "lost": 0}
    clock.t += 61.0  # capture wrote nothing for a minute (its status row cannot reach a full disk either)
    assert body()["alarms"] == ["capture_stale", "passage_store"]
    ob.put_status("capture", {"passages": {"missed": 12, "backlog": 0, "recorded_late": 12, "lost": 0}})
    assert body()["alarms"] == []
    ob.close()


def test_a_disk_so_full_that_the_uplink_cannot_delete_still_shows_in_the_published_status(
        small_disk: Path, broker: Broker) -> None:
    ob = Outbox(small_disk / "outbox.db", limits=OutboxLimits(min_free_bytes=0))
    committed = ob.append([BOUNDARY.to_event(o) for o in observations(300)]).records
    ballast = _ballast(small_disk, 0)  # the WAL cannot grow: the uplink's deletes fail as well
    sub = Subscriber(broker.port, client_id="platform")
    up, t = _uplink(ob, broker)
    try:
        assert wait_until(lambda: any(s["disk_full"] and "disk_full" in s["alarms"] for s in sub.statuses), 15), \
            sub.statuses[-1:] or "no status published"
        assert ob.depth() == 300  # acknowledged by the broker, not yet deleted: kept, sent again if need be
        ballast.unlink()
        assert wait_until(lambda: ob.depth() == 0, 30)
        assert not sub.wait_for({r.event_id for r in committed}, 10)
        assert wait_until(lambda: not sub.statuses[-1]["disk_full"], 10)
    finally:
        up.stop()
        t.join(10)
        sub.close()
    ob.close()
