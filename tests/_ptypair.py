"""A null-modem pair of real pseudo-terminals: what one end writes, the other reads.

Two `os.openpty()` pairs with a relay thread copying between their master sides, so each test gets
two real tty device paths (like `socat pty,raw pty,raw`) without any package beyond the stdlib.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty


class PtyPair:
    """Two tty paths, `a` and `b`, wired to each other; `close()` tears the relay down."""

    def __init__(self) -> None:
        self._ma, self._sa = os.openpty()
        self._mb, self._sb = os.openpty()
        for fd in (self._sa, self._sb):
            tty.setraw(fd)  # no echo, no line discipline: Modbus frames are binary
        self.a = os.ttyname(self._sa)
        self.b = os.ttyname(self._sb)
        self.relayed = 0
        self.cut = False
        """While True the relay swallows everything: a cable pulled out of the module."""
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._relay, name="pty-relay", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        peer = {self._ma: self._mb, self._mb: self._ma}
        while not self._stop.is_set():
            ready, _, _ = select.select([self._ma, self._mb, self._wake_r], [], [], 0.5)
            for fd in ready:
                if fd == self._wake_r:
                    return
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue  # the slave side is closed for a moment (a client reopening the port)
                if data and not self.cut:
                    os.write(peer[fd], data)
                    self.relayed += len(data)

    def close(self) -> None:
        """Stop the relay and close every descriptor."""
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        for fd in (self._ma, self._mb, self._sa, self._sb, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def lockable(path: str) -> bool:
    """Whether no other process holds an exclusive lock on the tty at `path` (as pyserial takes).

    On a shared machine the name a new pty gets can be one another process still has open and
    locked (a leftover daemon in another container's view of /dev/pts); opening it then fails.
    """
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def free_pair(tries: int = 8) -> PtyPair:
    """A `PtyPair` whose two names nobody else holds locked (skipping, and then closing, any that are)."""
    held: list[PtyPair] = []
    try:
        for _ in range(tries):
            pair = PtyPair()
            if lockable(pair.a) and lockable(pair.b):
                return pair
            held.append(pair)  # kept open until a free pair is found, so the next one gets new names
        raise RuntimeError(f"no pty pair free of other processes' locks in {tries} tries")
    finally:
        for pair in held:
            pair.close()
