"""A bounded, latest-wins queue between a camera thread and the pipeline that consumes its frames.

A slow consumer must never stall capture nor see a backlog of stale frames: `put` never blocks, and
when the queue is full the oldest item is evicted (and counted) to make room for the newest.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from edge.types import Frame

T = TypeVar("T")


class QueueClosedError(Exception):
    """Raised by `get` once the queue is closed and drained; the producer has finished."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counters of a `LatestQueue` since it was created."""

    put: int
    got: int
    dropped: int
    size: int
    closed: bool


class LatestQueue(Generic[T]):
    """A thread-safe bounded queue whose `put` never blocks and evicts the oldest item when full."""

    def __init__(self, maxsize: int = 1) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._closed = False
        self._put = 0
        self._got = 0
        self._dropped = 0

    @property
    def maxsize(self) -> int:
        """The most items held at once."""
        return self._maxsize

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        with self._cond:
            return self._closed

    @property
    def dropped(self) -> int:
        """Items evicted unseen (or refused after close)."""
        with self._cond:
            return self._dropped

    def put(self, item: T) -> bool:
        """Add an item without blocking; return True if an older item was evicted to make room.

        After `close` the item is refused and counted as dropped (returns True).
        """
        with self._cond:
            if self._closed:
                self._dropped += 1
                return True
            evicted = False
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self._dropped += 1
                evicted = True
            self._items.append(item)
            self._put += 1
            self._cond.notify()
            return evicted

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block until an item can be put without evicting one (or the queue closes); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._items) >= self._maxsize and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Return the oldest item, waiting up to `timeout` seconds (None: forever).

        Returns None on timeout; raises `QueueClosedError` once the queue is closed and empty, so a
        consumer drains what was put before the producer finished.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise QueueClosedError
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._got += 1
            item = self._items.popleft()
            self._cond.notify_all()  # a lossless producer may be waiting for room
            return item

    def close(self) -> None:
        """Refuse further items and wake every waiting consumer; idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stats(self) -> QueueStats:
        """A consistent snapshot of the counters."""
        with self._cond:
            return QueueStats(
                put=self._put, got=self._got, dropped=self._dropped, size=len(self._items), closed=self._closed
            )

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __iter__(self) -> Iterator[T]:
        """Yield items until the queue is closed and drained."""
        while True:
            try:
                item = self.get()
            except QueueClosedError:
                return
            if item is not None:
                yield item


class FrameQueue(LatestQueue[Frame]):
    """A latest-wins queue of camera frames (one per camera)."""
