"""systemd notification (Type=notify and the watchdog) over $NOTIFY_SOCKET, without a dependency."""

from __future__ import annotations

import contextlib
import os
import socket


class Notifier:
    """Sends READY/WATCHDOG/STATUS/STOPPING to systemd; a no-op when not run by systemd."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET")
        self._addr: str | None = None
        if addr:
            # A leading '@' names an abstract socket.
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if usec and usec.isdigit() else None

    def _send(self, text: str) -> None:
        if self._addr is None:
            return
        # OSError: systemd is gone (shutdown); there is nothing useful to do about it.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
            s.sendto(text.encode(), self._addr)

    def ready(self, status: str = "") -> None:
        """Tell systemd start-up is complete."""
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        """Keep the watchdog from restarting us."""
        self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """A one-line status shown by `systemctl status`."""
        self._send(f"STATUS={text}")

    def stopping(self) -> None:
        """Tell systemd we are shutting down."""
        self._send("STOPPING=1")
