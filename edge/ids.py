"""Identifier helpers: UUIDv7 event ids (time-ordered, RFC 9562) without a third-party package."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """Return a UUIDv7 whose ids from this process are strictly increasing.

    RFC 9562 method 1: a 12-bit counter in rand_a, seeded randomly each millisecond, keeps ids
    monotonic within one millisecond; if it overflows we borrow the next millisecond.
    """
    global _last_ms, _counter
    with _lock:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x7FF  # leave headroom to count up
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= (_counter & 0xFFF) << 64
        value |= 0b10 << 62
        value |= rand_b
        return uuid.UUID(int=value)


def random_ref(nbytes: int = 12) -> str:
    """A random, unlinkable reference (hex) for an unknown subject, e.g. one face track."""
    return os.urandom(nbytes).hex()
