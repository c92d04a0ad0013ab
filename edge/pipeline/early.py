"""Early decisions: a passage is emitted as soon as its result is confident, not when its track ends.

A watch-list hit or a resident match must not wait for the car or the person to leave the gate:
the track close timeout alone is about a second. A path asks `EarlyDecisions` which open tracks
are still undecided, emits the ones whose result is confident under a preassigned event_id, and
when a decided track ends it emits nothing, or, rarely, a correction that links the early event.
One passage stays one event unless it had to be corrected.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.ids import uuid7


@dataclass(frozen=True, slots=True)
class Decided:
    """What was emitted early for a track: the event's id, the decided key (e.g. the plate text,
    kept only in memory, never logged) and how many agreeing reads backed it."""

    event_id: str
    key: str
    support: int


class EarlyDecisions:
    """Per-path memory of the tracks decided early (bounded by the open tracks: entries are
    removed when their track ends)."""

    def __init__(self) -> None:
        self._decided: dict[int, Decided] = {}
        self.early = 0
        self.corrections = 0

    def __contains__(self, track_id: int) -> bool:
        return track_id in self._decided

    def decide(self, track_id: int, key: str, support: int, ts: float) -> str:
        """Record an early decision; returns the event_id to publish it under."""
        event_id = str(uuid7(int(ts * 1000)))
        self._decided[track_id] = Decided(event_id, key, support)
        self.early += 1
        return event_id

    def peek(self, track_id: int) -> Decided | None:
        """What was decided early for an open track, or None."""
        return self._decided.get(track_id)

    def close(self, track_id: int) -> Decided | None:
        """The track ended: what was decided early for it (and forget it), or None."""
        return self._decided.pop(track_id, None)

    def count_correction(self) -> None:
        """A decided track's final result differed and a correction was emitted."""
        self.corrections += 1
