"""The gateway's disk budget: every state file against the filesystem's free space, with a reserve.

The outbox is not the only thing that grows on a gateway: each SQLite database keeps a write-ahead
log that grows to about `WAL_LIMIT_BYTES` before a checkpoint (and stays that size), and the passage
store gains a row for every swipe it records. A quota that counted only the outbox file let those eat
the reserve, until the disk filled and commits were refused outright. Here the outbox may grow only
into the space that is left once the reserve and every database's WAL headroom are set aside, and it
always keeps a small live allowance, so live events flow with the broker up even on a short disk.

Pure arithmetic plus `os.stat`/`os.statvfs`: no SQLite, so both daemons and `edgegw check` use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

WAL_LIMIT_BYTES = 4 * 1024 * 1024 + 256 * 1024
"""How large a WAL grows before SQLite's automatic checkpoint (1000 pages of 4 KiB) plus a large commit."""
PASSAGE_BYTES_PER_EVENT = 300.0
"""What the passage store gains per committed event of a mixed stream (bench/bench_disk.py measured 299–300)."""
_SIDE_FILES = ("-wal", "-shm", "-journal")


def disk_free(path: Path) -> int:
    """Bytes available to this (unprivileged) process on the filesystem holding `path`."""
    st = os.statvfs(path)
    return int(st.f_bavail) * int(st.f_frsize)


def _size(path: Path) -> int:
    try:
        return int(path.stat().st_size)
    except OSError:
        return 0


@dataclass(frozen=True, slots=True)
class StateFiles:
    """What the state files take now, and what their WALs may still take."""

    bytes: int
    """All state files with their -wal/-shm side files."""
    wal_headroom: int
    """How much more the databases' WALs may grow before their next checkpoint."""
    by_file: dict[str, int]


def state_files(databases: Iterable[Path], others: Iterable[Path] = ()) -> StateFiles:
    """Sizes of the SQLite `databases` (with their side files) and of plain `others` files."""
    total, headroom = 0, 0
    by_file: dict[str, int] = {}
    for db in dict.fromkeys(databases):
        main = _size(db)
        wal = _size(Path(f"{db}-wal"))
        size = main + sum(_size(Path(f"{db}{s}")) for s in _SIDE_FILES)
        by_file[db.name] = size
        total += size
        if main or wal:
            headroom += max(WAL_LIMIT_BYTES - wal, 0)
    for path in dict.fromkeys(others):
        by_file[path.name] = _size(path)
        total += by_file[path.name]
    return StateFiles(total, headroom, by_file)


def outbox_quota(*, max_bytes: int, file_bytes: int, free: int, reserve: int, wal_headroom: int,
                 live_bytes: int) -> int:
    """The outbox's byte quota in force.

    It may grow (beyond the pages its file already has, which it reuses) into the free space that is
    left after the reserve and the WAL headroom. Whatever the disk, it keeps `live_bytes`, as long as
    the disk physically has them after the WAL headroom: on a short disk the backlog is small, but
    live events are never dropped just because something else ate into the reserve.
    """
    growth = max(free - reserve - wal_headroom, 0)
    live = min(live_bytes, file_bytes + max(free - wal_headroom, 0))
    return min(max_bytes, max(file_bytes + growth, live))


def outage_seconds(*, room_bytes: int, rate_eps: float | None, outbox_bytes_per_event: float,
                   other_bytes_per_event: float = 0.0, free_room_bytes: int | None = None) -> float | None:
    """How long a broker outage the outbox can absorb at `rate_eps` events/s without dropping.

    `room_bytes` is the outbox's room under its quota. While the backlog grows, the other stores
    keep growing too (`other_bytes_per_event`, the passage store's share) and take from the same
    `free_room_bytes`, which shrinks the quota as they go. None when no rate is known yet.
    """
    if rate_eps is None or rate_eps <= 0 or outbox_bytes_per_event <= 0:
        return None
    seconds = max(room_bytes, 0) / (rate_eps * outbox_bytes_per_event)
    if free_room_bytes is not None:
        shared = max(free_room_bytes, 0) / (rate_eps * (outbox_bytes_per_event + other_bytes_per_event))
        seconds = min(seconds, shared)
    return seconds


@dataclass(frozen=True, slots=True)
class RateWindow:
    """Events and bytes committed over two consecutive windows: a recent rate that survives restarts.

    Stored in the outbox (one small row, updated in each commit's transaction), so the uplink and a
    one-shot `edgegw status` read the same rate the capture daemon produced.
    """

    prev_start: float
    prev_events: int
    prev_bytes: int
    start: float
    events: int
    bytes: int

    WINDOW_S = 600.0

    @classmethod
    def empty(cls, now: float) -> RateWindow:
        """No commits yet."""
        return cls(now, 0, 0, now, 0, 0)

    def add(self, now: float, events: int, nbytes: int) -> RateWindow:
        """Count a commit of `events` taking `nbytes`; rolls over every WINDOW_S."""
        if now - self.start >= self.WINDOW_S:
            if now - self.start >= 2 * self.WINDOW_S:  # idle for a whole window: the old one says nothing
                return RateWindow(now - self.WINDOW_S, 0, 0, now, events, nbytes)
            return RateWindow(self.start, self.events, self.bytes, now, events, nbytes)
        return RateWindow(self.prev_start, self.prev_events, self.prev_bytes, self.start,
                          self.events + events, self.bytes + nbytes)

    def rate_eps(self, now: float) -> float | None:
        """Events per second over both windows; None before a minute of history."""
        span = now - self.prev_start
        n = self.prev_events + self.events
        if span < 60.0 or n == 0:
            return None
        return n / span

    def bytes_per_event(self) -> float | None:
        """Mean encoded size of the recent events (payload and topic)."""
        n = self.prev_events + self.events
        return None if n == 0 else (self.prev_bytes + self.bytes) / n

    def encode(self) -> str:
        """As stored."""
        return ",".join(repr(v) for v in (self.prev_start, self.prev_events, self.prev_bytes, self.start,
                                          self.events, self.bytes))

    @classmethod
    def decode(cls, text: str | None, now: float) -> RateWindow:
        """From storage (an unreadable or missing value starts afresh)."""
        try:
            a, b, c, d, e, f = (text or "").split(",")
            return cls(float(a), int(b), int(c), float(d), int(e), int(f))
        except ValueError:
            return cls.empty(now)


def describe_outage(outage_s: float | None, rate_eps: float | None) -> str:
    """The outage buffer in words, for `edgegw status` and `edgegw check`."""
    if outage_s is None or rate_eps is None:
        return "outage buffer: no event rate yet (needs a minute of commits)"
    return f"outage buffer: {outage_s / 3600.0:.1f} h at the recent {rate_eps:.2f} events/s"
