"""The one way an observation becomes a committed event: privacy boundary → schema → outbox.

Camera workers and the serial hub hand their observations to one `Committer`. It turns them into
events at the privacy boundary, appends them to the outbox (retrying with backoff until the outbox
takes them: frames may be dropped under load, events never), then lets the commit observers (the
passage store, passage fusion) see the committed pairs and commits what they derive, in the same
loop, until nothing more is derived.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from edge.backoff import Backoff
from edge.configbase import BackoffConfig
from edge.errors import OutboxError, PrivacyError
from edge.outbox import Outbox
from edge.privacy.boundary import PrivacyBoundary
from edge.types import Derived, Event, EventKind, Observation

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


class Committer:
    """Turns observations into events at the privacy boundary and commits them (thread-safe)."""

    def __init__(self, outbox: Outbox, boundary: PrivacyBoundary, backoff: BackoffConfig,
                 observers: Sequence[CommitObserver] = ()) -> None:
        self._outbox = outbox
        self._boundary = boundary
        self._lock = threading.Lock()
        self._backoff_cfg = backoff
        self.observers = list(observers)
        self.committed = 0
        self.failures = 0
        self.refused = 0

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
        while True:
            try:
                with self._lock:
                    result = self._outbox.append([e for _, e in pairs])
                    self.committed += len(result.records)
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
                delay = backoff.next_delay()
                log.error("cannot commit %d event(s), retrying in %.1f s: %s", len(pairs), delay, exc)
                if stop is not None and stop.wait(delay):
                    log.error("stopping with %d uncommitted event(s)", len(pairs))
                    return []
                if stop is None:
                    time.sleep(delay)
        if result.dropped:
            self._alarm_dropped(sum(result.dropped.values()))
        return derived

    def _alarm_dropped(self, n: int) -> None:
        # Outside the batch's retry loop: the batch is committed, and a failure here must not make
        # the loop append it a second time.
        alarm = Observation(EventKind.ALARM, "outbox", time.time(), attrs={
            "code": "outbox_quota", "message": "outbox quota reached: oldest low-priority events dropped",
            "count": n, "severity": "warning"})
        try:
            with self._lock:
                extra = self._outbox.append([self._boundary.to_event(alarm)]).dropped
        except OutboxError as exc:
            log.error("cannot record the quota alarm for %d dropped event(s): %s", n, exc)
            return
        if extra:  # the alarm's own commit made room too: say so, once
            with self._lock, contextlib.suppress(OutboxError):
                self._outbox.append([self._boundary.to_event(Observation(
                    EventKind.ALARM, "outbox", time.time(), attrs={
                        "code": "outbox_quota", "message": "outbox quota reached while recording an alarm",
                        "count": sum(extra.values()), "severity": "warning"}))])

    def tick(self, now: float, stop: threading.Event | None = None) -> None:
        """Let observers close their time windows; commit what they derive."""
        derived: list[Derived] = []
        with self._lock:
            for observer in self.observers:
                derived += observer.tick(now)
        self._commit_all(derived, stop)


