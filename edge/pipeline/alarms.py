"""Capture's storage alarms, raised once, repeated at a bounded interval with counts, cleared when over.

Two conditions: the outbox quota dropping events, and a full disk refusing commits. Each gives one
`alarm` event when it starts (or, for the disk, when space returns: an event cannot be committed to
a full disk), at most one more per `repeat_s` while it lasts with the count since the previous one,
and one `<code>_cleared` event (severity info) with the episode's total when it ends. Before this,
every dropping commit committed its own alarm: 319 alarm events in a 30 s outage.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.types import EventKind, Observation

QUOTA = "outbox_quota"
DISK_FULL = "disk_full"


def _alarm(code: str, now: float, message: str, count: int, severity: str) -> Observation:
    return Observation(EventKind.ALARM, "outbox", now, attrs={
        "code": code, "message": message[:200], "count": count, "severity": severity})


@dataclass
class QuotaAlarm:
    """The quota alarm's episode: raised at the first drop, repeated every `repeat_s`, cleared by the outbox."""

    repeat_s: float
    raised_at: float | None = None
    last_sent: float = 0.0
    unreported: int = 0
    """Drops since the last alarm event."""
    total: int = 0
    """Drops in this episode."""

    def dropped(self, n: int, now: float) -> Observation | None:
        """Count `n` dropped events; an alarm to commit when one is due."""
        self.unreported += n
        self.total += n
        if self.raised_at is None:
            self.raised_at = now
            return self._send(now, f"outbox quota reached: {n} oldest low-priority event(s) dropped")
        return self.due(now)

    def due(self, now: float) -> Observation | None:
        """The repeat, if drops happened since the last alarm and `repeat_s` has passed."""
        if self.raised_at is None or not self.unreported or now - self.last_sent < self.repeat_s:
            return None
        return self._send(now, f"outbox quota still reached: {self.unreported} more event(s) dropped "
                               f"({self.total} since the alarm was raised)")

    def _send(self, now: float, message: str) -> Observation:
        count, self.unreported, self.last_sent = self.unreported, 0, now
        return _alarm(QUOTA, now, message, count, "warning")

    def cleared(self, now: float) -> Observation | None:
        """The outbox is back below its quota: the closing event (None if no alarm was up)."""
        if self.raised_at is None:
            return None
        obs = _alarm(f"{QUOTA}_cleared", now, f"outbox quota no longer reached after {now - self.raised_at:.0f} s: "
                     f"{self.total} event(s) dropped in all ({self.unreported} not in an earlier alarm)",
                     self.total, "info")
        self.raised_at, self.unreported, self.total = None, 0, 0
        return obs


@dataclass
class DiskFullAlarm:
    """A full disk refusing commits: reported once the disk takes commits again (it cannot be before)."""

    since: float | None = None
    refused: int = 0
    """Commits the full disk refused in this episode (each retried: nothing was dropped)."""

    def refusal(self, now: float) -> None:
        """A commit failed because the disk is full."""
        self.since = self.since if self.since is not None else now
        self.refused += 1

    def recovered(self, now: float) -> Observation | None:
        """A commit went through: the episode's alarm (None if the disk was not full)."""
        if self.since is None:
            return None
        obs = _alarm(DISK_FULL, now, f"the disk was full for {now - self.since:.0f} s: {self.refused} commit(s) "
                     "refused and retried, nothing dropped; see storage in the status", self.refused, "critical")
        self.since, self.refused = None, 0
        return obs
