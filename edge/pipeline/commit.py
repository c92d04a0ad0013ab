"""The one way an observation becomes a committed event: privacy boundary → schema → outbox.

Camera workers and the serial hub hand their observations to one `Committer`. It turns them into
events at the privacy boundary, appends them to the outbox (retrying with backoff until the outbox
takes them: frames may be dropped under load, events never), then lets the commit observers (the
passage store, passage fusion) see the committed pairs and commits what they derive, in the same
loop, until nothing more is derived.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from edge.backoff import Backoff
from edge.configbase import BackoffConfig
from edge.errors import OutboxError, PrivacyError
from edge.events import compile_schema
from edge.outbox import Outbox, OutboxFullError
from edge.pipeline.alarms import DiskFullAlarm, QuotaAlarm
from edge.privacy.boundary import PrivacyBoundary
from edge.types import Derived, Event, Observation

log = logging.getLogger(__name__)


class CommitObserver(Protocol):
    """Sees every committed (observation, event) pair; may derive new observations to commit.

    The passage store records raw observations (encrypted there) keyed by event_id; passage fusion
    answers with fused `passage` observations and the event_ids they link.
    """

    def committed(self, pairs: Sequence[tuple[Observation, Event]]) -> list[Derived]:
        """Called after each commit, under the committer's lock."""
        ...

    def tick(self, now: float) -> list[Derived]:
        """Called about every 200 ms: close time windows."""
        ...


class WatchMatcher(Protocol):
    """The watch-lists in force (edge.watchlist.WatchlistStore fits)."""

    def hits_for(self, events: Sequence[Event]) -> list[Derived]:
        """`watch_hit` alarms for events about to be committed, each linking the event it matched."""
        ...

    def reload_if_changed(self) -> bool:
        """Pick up lists the uplink daemon accepted since the last call."""
        ...


class Committer:
    """Turns observations into events at the privacy boundary and commits them (thread-safe)."""

    def __init__(self, outbox: Outbox, boundary: PrivacyBoundary, backoff: BackoffConfig,
                 observers: Sequence[CommitObserver] = (), *, alarm_repeat_s: float = 300.0,
                 clock: Callable[[], float] = time.time, watch: WatchMatcher | None = None) -> None:
        self._outbox = outbox
        self._boundary = boundary
        self._watch = watch
        # Every commit validates against the schema: compile it at start, not inside the first commit.
        compile_schema()
        self._lock = threading.Lock()
        self._backoff_cfg = backoff
        self._clock = clock
        self.observers = list(observers)
        self.committed = 0
        self.committed_by_kind: dict[str, int] = {}
        self.failures = 0
        self.refused = 0
        self.full_refusals = 0
        """Commits a full disk refused (each retried; nothing dropped)."""
        self.quota_alarm = QuotaAlarm(alarm_repeat_s)
        self.disk_alarm = DiskFullAlarm()
        self._next_alarm_check = 0.0
        self._pending_alarms: list[Observation] = []
        self.alarms_committed = 0
        """Storage alarm events committed (quota raised/repeated/cleared, disk full)."""

    def commit(self, observations: Sequence[Observation], stop: threading.Event | None = None) -> None:
        """Commit, retrying with backoff until it succeeds or `stop` is set. Never drops."""
        self._commit_all([Derived(obs) for obs in observations], stop)

    def _commit_all(self, batch: Sequence[Derived], stop: threading.Event | None) -> None:
        # What the observers derive from one commit (a fused passage) is committed next, in this
        # loop; a passage never derives another, but the loop does not depend on that.
        while batch:
            pairs = self._to_events(batch)
            batch = self._append(pairs, stop) if pairs else []

    def _to_events(self, batch: Sequence[Derived]) -> list[tuple[Observation, Event]]:
        out: list[tuple[Observation, Event]] = []
        for item in batch:
            try:
                out.append((item.observation, self._boundary.to_event(item.observation, links=item.links)))
            except (PrivacyError, ValueError, TypeError) as exc:
                self._refuse(item.observation, exc)
        return out

    def _refuse(self, obs: Observation, exc: Exception) -> None:
        # An observation the boundary or the schema refuses is a bug upstream; it must neither kill
        # the pipeline nor take the other observations of its batch down with it.
        self.refused += 1
        log.error("refused a %s observation from %s at the privacy boundary: %s", obs.kind.value, obs.source_id, exc)

    def _append(self, pairs: list[tuple[Observation, Event]], stop: threading.Event | None) -> list[Derived]:
        backoff = Backoff(self._backoff_cfg)
        # Watch-list hits ride in the same append as the events they link: a hit is never lost
        # between its event and its alarm. Looked up once, so a retried append audits a hit once.
        batch = [e for _, e in pairs] + [e for _, e in self._hits([e for _, e in pairs])]
        while True:
            try:
                with self._lock:
                    result = self._outbox.append(batch)
                    self.committed += len(result.records)
                    for _, event in pairs:
                        self.committed_by_kind[event.kind.value] = self.committed_by_kind.get(event.kind.value, 0) + 1
                    derived: list[Derived] = []
                    for observer in self.observers:
                        derived += observer.committed(pairs)
                break
            except PrivacyError as exc:
                # The outbox validates before it writes: nothing of this batch is committed. Find
                # the offending event by committing the rest one at a time.
                if len(pairs) == 1:
                    self._refuse(pairs[0][0], exc)
                    return []
                return [d for pair in pairs for d in self._append([pair], stop)]
            except OutboxError as exc:
                self.failures += 1
                if isinstance(exc, OutboxFullError):
                    with self._lock:
                        self.full_refusals += 1
                        self.disk_alarm.refusal(self._clock())
                delay = backoff.next_delay()
                log.error("cannot commit %d event(s), retrying in %.1f s: %s", len(pairs), delay, exc)
                if stop is not None and stop.wait(delay):
                    log.error("stopping with %d uncommitted event(s)", len(pairs))
                    return []
                if stop is None:
                    time.sleep(delay)
        now = self._clock()
        with self._lock:  # camera workers and the serial hub commit from their own threads
            alarms = [a for a in (self.disk_alarm.recovered(now),) if a is not None]
            if result.dropped:
                quota = self.quota_alarm.dropped(sum(result.dropped.values()), now)
                alarms += [quota] if quota is not None else []
            elif self.quota_alarm.raised_at is not None:
                alarms += self._quota_check(now)
        self._commit_alarms(alarms)
        return derived

    def _hits(self, events: list[Event]) -> list[tuple[Observation, Event]]:
        if self._watch is None:
            return []
        out: list[tuple[Observation, Event]] = []
        for hit in self._watch.hits_for(events):
            try:
                out.append((hit.observation, self._boundary.to_event(hit.observation, links=hit.links)))
            except (PrivacyError, ValueError, TypeError) as exc:
                self._refuse(hit.observation, exc)
        return out

    def _quota_check(self, now: float) -> list[Observation]:
        """The repeat when due, or the closing alarm once the outbox is back below its quota (under the lock)."""
        try:
            active = self._outbox.quota_state().active
        except OutboxError:
            return []
        alarm = self.quota_alarm.due(now) if active else self.quota_alarm.cleared(now)
        return [] if alarm is None else [alarm]

    def _commit_alarms(self, alarms: Sequence[Observation]) -> None:
        # Outside the batch's retry loop: the batch is committed, and a failure here must not make
        # the loop append it a second time. What an alarm's own commit drops joins the quota alarm.
        with self._lock:
            batch = [*self._pending_alarms, *alarms]
            if not batch:
                return
            try:
                extra = self._outbox.append([self._boundary.to_event(a) for a in batch]).dropped
            except OutboxError as exc:
                # Kept and tried again with the next commit or tick (a disk just back may still be short).
                self._pending_alarms = batch[-16:]
                log.error("cannot record %d storage alarm(s) yet: %s", len(batch), exc)
                return
            self._pending_alarms = []
            self.alarms_committed += len(batch)
            if extra:
                raised = self.quota_alarm.dropped(sum(extra.values()), self._clock())
                if raised is not None:
                    self._pending_alarms.append(raised)  # committed with the next commit or tick

    def tick(self, now: float, stop: threading.Event | None = None) -> None:
        """Let observers close their time windows; commit what they derive."""
        derived: list[Derived] = []
        with self._lock:
            for observer in self.observers:
                derived += observer.tick(now)
        if self._watch is not None:
            self._watch.reload_if_changed()  # outside the lock: a file read, not an outbox write
        self._commit_all(derived, stop)
        wall = self._clock()
        if (self.quota_alarm.raised_at is not None or self._pending_alarms) and wall >= self._next_alarm_check:
            # No commits may come for a while (a quiet gate): repeat, clear and retry from here too.
            self._next_alarm_check = wall + 1.0
            with self._lock:
                alarms = self._quota_check(wall) if self.quota_alarm.raised_at is not None else []
            self._commit_alarms(alarms)


