"""The latest-wins frame queue: never blocks the producer, drops the oldest, wakes consumers on close."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.framequeue import FrameQueue, LatestQueue, QueueClosedError
from edge.types import Frame


def test_fifo_within_capacity() -> None:
    q: LatestQueue[int] = LatestQueue(3)
    assert [q.put(i) for i in range(3)] == [False, False, False]
    assert [q.get(0) for _ in range(3)] == [0, 1, 2]
    assert q.stats().dropped == 0


def test_full_queue_evicts_oldest_and_counts() -> None:
    q: LatestQueue[int] = LatestQueue(2)
    q.put(1)
    q.put(2)
    assert q.put(3) is True  # 1 evicted
    assert q.put(4) is True  # 2 evicted
    assert len(q) == 2
    assert q.get(0) == 3
    assert q.get(0) == 4
    stats = q.stats()
    assert (stats.put, stats.got, stats.dropped, stats.size) == (4, 2, 2, 0)


def test_get_times_out_with_none() -> None:
    q: LatestQueue[int] = LatestQueue(1)
    start = time.monotonic()
    assert q.get(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04


def test_close_drains_then_raises_and_refuses_puts() -> None:
    q: LatestQueue[str] = LatestQueue(4)
    q.put("a")
    q.put("b")
    q.close()
    assert q.put("c") is True  # refused, counted as dropped
    assert q.get(0) == "a"
    assert q.get(0) == "b"
    with pytest.raises(QueueClosedError):
        q.get(0)
    with pytest.raises(QueueClosedError):
        q.get(None)  # closed and empty: never blocks
    assert q.stats().dropped == 1


def test_close_wakes_a_blocked_consumer() -> None:
    q: LatestQueue[int] = LatestQueue(1)
    outcome: list[str] = []

    def consume() -> None:
        try:
            q.get(None)
        except QueueClosedError:
            outcome.append("closed")

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.05)
    assert t.is_alive()  # really blocked
    q.close()
    t.join(2.0)
    assert not t.is_alive()
    assert outcome == ["closed"]


def test_iteration_ends_when_closed() -> None:
    q: LatestQueue[int] = LatestQueue(8)
    for i in range(5):
        q.put(i)
    q.close()
    assert list(q) == [0, 1, 2, 3, 4]


def test_fast_producer_slow_consumer_sees_latest_in_order() -> None:
    q: LatestQueue[int] = LatestQueue(2)
    n = 20_000
    received: list[int] = []

    def produce() -> None:
        for i in range(n):
            q.put(i)  # never blocks, however slow the consumer
        q.close()

    producer = threading.Thread(target=produce)
    producer.start()
    for item in q:
        received.append(item)
        time.sleep(0.001)  # a slow pipeline
    producer.join()
    stats = q.stats()
    assert received == sorted(set(received))  # in order, no duplicates
    assert received[-1] == n - 1  # the newest item always reaches the consumer
    assert stats.dropped > 0
    assert stats.put == n
    assert stats.got + stats.dropped == n
    # The producer was never held back by the consumer's 1 ms per item: most items were dropped.
    assert len(received) < n // 2


def test_frame_queue_holds_frames() -> None:
    q = FrameQueue(1)
    image = np.zeros((4, 4, 3), np.uint8)
    q.put(Frame("cam", 0, 0.0, image))
    q.put(Frame("cam", 1, 0.1, image))
    got = q.get(0)
    assert got is not None and got.index == 1
    assert q.maxsize == 1 and q.dropped == 1


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LatestQueue[int](0)
