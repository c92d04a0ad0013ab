"""The bridge's loop: stay registered, keep alive, keep time, move the outbox.

    unregistered ──register ok──▶ registered ──keepalive refused, or N misses──▶ unregistered
         ▲  │ refused N times: stop (exit 1)            │ every keepalive_s; time sync on register
         └──┘ outage: backoff, forever                  │ and every time_sync_s; deliveries only here

Deliveries happen only while registered. An outage while delivering holds delivery for a backoff
and asks for a keepalive at once, which is what notices a lost server; after a re-registration
the whole backlog is made due at once. Rows are retried with their stored NotificationID and body,
so the upper platform sees the same ids however many times the bridge tries.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

from district.config import ViidConfig
from district.errors import DistrictError
from district.viid import protocol as p
from district.viid.client import TimeSync, ViidClient, ViidRefusedError, ViidUnavailableError
from district.viid.outbox import Outbox, OutboxRow
from edge.backoff import Backoff
from edge.compat import UTC

log = logging.getLogger(__name__)


def _iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Bridge:
    """Run with `run()` (blocks until `stop()`); `step()` is one pass, for tests and `register-test`."""

    def __init__(self, cfg: ViidConfig, client: ViidClient, outbox: Outbox,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.client = client
        self.outbox = outbox
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._register_backoff = Backoff(cfg.backoff)
        self._retry_rng = random.Random()
        self.registered = False
        self.registrations = 0
        self._refusals = 0
        self._misses = 0
        self._next_register = 0.0
        self._next_keepalive = 0.0
        self._next_time = 0.0
        self._hold_until = 0.0
        self._next_prune = 0.0
        self.last_time: TimeSync | None = None
        self.delivered = 0

    # -- control ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end (it unregisters on the way out)."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Something changed (a subscription): do a pass now instead of at the next tick."""
        self._wake.set()

    def run(self) -> None:
        """Loop until stop(); raises ViidRefusedError after `register_refusals` refused registrations."""
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except (DistrictError, psycopg.Error) as exc:
                    if isinstance(exc, ViidRefusedError) and self._refusals >= self.cfg.register_refusals:
                        raise
                    log.warning("VIID bridge: %s", exc)
                self._wake.wait(self.cfg.tick_s)
                self._wake.clear()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Unregister (one try: the server may be the reason we stop) and close the client."""
        if self.registered:
            try:
                self.client.unregister()
                log.info("VIID: unregistered")
            except (ViidUnavailableError, ViidRefusedError) as exc:
                log.warning("VIID: unregister failed: %s", exc)
            self.registered = False
            self._record(registered=False, unregistered_at=_iso())
        self.client.close()
        self.outbox.close()

    # -- one pass --------------------------------------------------------------------------------
    def step(self) -> None:
        """Register if needed, keepalive and time sync when due, then collect and deliver.

        The registration comes first, so PostgreSQL being away (which makes the rest raise) does
        not also cost us the upper platform: keepalives go on, and so does recording what we can.
        """
        now = self._clock()
        self._stay_registered(now)
        self.outbox.collect_watch_hits()
        self.outbox.enqueue_reports()
        if now >= self._next_prune:
            self._next_prune = now + 3600
            self.outbox.prune()
        if self.registered and self._clock() >= self._hold_until:
            self._deliver(self._clock())

    def _stay_registered(self, now: float) -> None:
        if not self.registered:
            if now < self._next_register:
                return
            self._register(now)
            if not self.registered:
                return
            now = self._clock()
        if now >= self._next_keepalive:
            self._keepalive(now)
            if not self.registered:
                return
        if now >= self._next_time:
            self._sync_time(now)

    def _register(self, now: float) -> None:
        try:
            self.client.register()
        except ViidRefusedError as exc:
            self._refusals += 1
            self._next_register = now + self._register_backoff.next_delay()
            self._record(registered=False, last_error=str(exc), register_refusals=self._refusals)
            log.error("VIID: registration refused (%d of %d): %s", self._refusals, self.cfg.register_refusals, exc)
            raise
        except ViidUnavailableError as exc:
            self._next_register = now + self._register_backoff.next_delay()
            self._record(registered=False, last_error=str(exc))
            log.warning("VIID: cannot register: %s", exc)
            return
        self.registered = True
        self.registrations += 1
        self._refusals = self._misses = 0
        self._register_backoff.reset()
        self._next_keepalive = now + self.cfg.keepalive_s
        self._next_time = now  # a fresh registration is the moment to learn the server's clock
        self._hold_until = 0.0
        self.outbox.retry_now()
        self._record(registered=True, registered_at=_iso(), registrations=self.registrations, last_error=None)
        log.info("VIID: registered as %s (registration %d)", self.cfg.device_id, self.registrations)

    def _lost(self, why: str) -> None:
        self.registered = False
        self._next_register = self._clock() + self._register_backoff.next_delay()
        self._record(registered=False, lost_at=_iso(), last_error=why)
        log.warning("VIID: registration lost (%s); registering again", why)

    def _keepalive(self, now: float) -> None:
        self._next_keepalive = now + self.cfg.keepalive_s
        try:
            self.client.keepalive()
        except ViidRefusedError as exc:  # the server answered and does not know us: register again
            self._lost(f"keepalive refused: {exc}")
            return
        except ViidUnavailableError as exc:
            self._misses += 1
            self._record(keepalive_misses=self._misses, last_error=str(exc))
            if self._misses >= self.cfg.keepalive_misses:
                self._lost(f"{self._misses} keepalives missed: {exc}")
            else:
                # Try again sooner than a whole interval: a lost server should be noticed quickly.
                self._next_keepalive = now + min(self.cfg.keepalive_s, self._register_backoff.config.initial_s)
            return
        self._misses = 0
        self._record(last_keepalive_at=_iso(), keepalive_misses=0)

    def _sync_time(self, now: float) -> None:
        self._next_time = now + self.cfg.time_sync_s
        try:
            ts = self.client.time()
        except (ViidUnavailableError, ViidRefusedError) as exc:
            log.warning("VIID: time sync failed: %s", exc)
            self._next_time = now + min(self.cfg.time_sync_s, self.cfg.keepalive_s)
            return
        self.last_time = ts
        self._record(time_offset_s=round(ts.offset_s, 3), time_rtt_s=round(ts.rtt_s, 4), time_synced_at=_iso())
        if abs(ts.offset_s) > 2.0:
            log.warning("VIID: the upper platform's clock is %+.1f s from ours", ts.offset_s)

    def _deliver(self, now: float) -> None:
        # A backlog goes out batch after batch, not one batch per tick; the budget keeps the
        # keepalive and the scans on time.
        deadline = self._clock() + max(self.cfg.tick_s, 1.0)
        while self._deliver_batch(now) == self.cfg.batch and self._clock() < deadline and not self._stop.is_set():
            if self._clock() < self._hold_until:
                break

    def _deliver_batch(self, now: float) -> int:
        """One batch of due rows; returns how many rows were due (0 when held or idle)."""
        rows = self.outbox.due(self.cfg.batch)
        groups: dict[tuple[str, str], list[OutboxRow]] = defaultdict(list)
        for r in rows:
            groups[(r.kind, r.url)].append(r)
        for (kind, url), batch in groups.items():
            objs = [r.body for r in batch]
            body = p.disposition_notifications(objs) if kind == "disposition" else p.subscribe_notifications(objs)
            try:
                statuses = self.client.post_notifications(url, body)
            except ViidUnavailableError as exc:
                if not url.startswith(self.cfg.server_url.rstrip("/") + "/"):
                    # A subscriber's own ReceiveAddr is down: its rows back off (and may die);
                    # the upper platform's deliveries are not held for it.
                    self.outbox.failed([r.id for r in batch], str(exc), self._retry_delay)
                    continue
                self._hold_until = now + self._register_backoff.next_delay()
                self._next_keepalive = now  # is the server gone? the keepalive will tell
                log.warning("VIID: delivery held: %s", exc)
                return 0
            except ViidRefusedError as exc:
                self.outbox.failed([r.id for r in batch], str(exc), self._retry_delay)
                continue
            ok, bad = _acknowledged(batch, statuses)
            self.outbox.delivered([r.id for r in ok])
            self.delivered += len(ok)
            if bad:
                why = "; ".join(sorted({f"{s.code} {s.text}" for s in statuses if not s.ok})) or "no status for the id"
                dead = self.outbox.failed([r.id for r in bad], why, self._retry_delay)
                log.warning("VIID: %d notification(s) not acknowledged (%s)%s", len(bad), why,
                            f", {dead} dead" if dead else "")
        return len(rows)

    def _retry_delay(self, attempts: int) -> float:
        b = self.cfg.backoff
        base = min(b.max_s, b.initial_s * b.factor ** (attempts - 1))
        return base / 2 + self._retry_rng.random() * base / 2

    def _record(self, **values: Any) -> None:
        try:
            self.outbox.set_state(**values)
        except (DistrictError, psycopg.Error) as exc:  # state is for the operator; never stop the bridge for it
            log.warning("VIID: cannot record state: %s", exc)


def _acknowledged(batch: list[OutboxRow], statuses: list[p.ResponseStatus]) -> tuple[list[OutboxRow], list[OutboxRow]]:
    """Split a batch by the statuses: one per NotificationID, or a single one for the whole list."""
    by_id = {s.id: s for s in statuses if s.id}
    single = statuses[0] if len(statuses) == 1 and not any(r.notification_id in by_id for r in batch) else None
    ok: list[OutboxRow] = []
    bad: list[OutboxRow] = []
    for r in batch:
        st = by_id.get(r.notification_id) or single
        (ok if st is not None and st.ok else bad).append(r)
    return ok, bad
