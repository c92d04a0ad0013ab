"""The uplink daemon's side of watch-lists: lists arriving from the broker go into the store.

The platform publishes each signed list retained on `watchlist_topic(district, list_id)`; the
uplink subscribes to them all and hands every message here. A list is verified and installed by
`WatchlistStore.offer` (which counts and audits refusals); the capture daemon, matching against the
same state file, picks it up on its next tick. The uplink also sweeps expired lists, so one process
writes the state file.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from edge.errors import EdgeError
from edge.watchlist import WatchlistRefusedError, WatchlistStore

log = logging.getLogger(__name__)


class WatchlistReceiver:
    """Takes list messages from the uplink's subscription; `sweep` on the uplink's loop."""

    def __init__(self, store: WatchlistStore, sweep_interval_s: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._sweep_interval_s = sweep_interval_s
        self._clock = clock
        self._next_sweep = 0.0
        self._seen: dict[str, bytes] = {}  # topic -> digest of the last payload handled on it

    def __call__(self, topic: str, payload: bytes) -> None:
        """One message on a watch-list topic (called on the uplink's thread)."""
        if not payload:
            return  # the platform cleared the retained topic; a withdrawal is a newer, empty version
        digest = hashlib.sha256(payload).digest()
        if self._seen.get(topic) == digest or self.store.holds(payload):
            self._seen[topic] = digest
            return  # the retained copy again, after a reconnect or a restart
        self._seen[topic] = digest
        try:
            self.store.offer(payload)
        except WatchlistRefusedError:
            pass  # counted, logged and audited by the store; the status says so
        except (OSError, EdgeError) as exc:
            # The state file could not be written (a full disk): not accepted. The list is retained,
            # so it comes again on the next connection.
            self._seen.pop(topic, None)
            log.error("watch-list from %s not installed: %s", topic, exc)

    def sweep(self) -> None:
        """Drop expired lists every `sweep_interval_s` (matching ignores them from expiry on anyway)."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval_s
        try:
            self.store.expire()
        except (OSError, EdgeError) as exc:
            log.warning("cannot sweep expired watch-lists now: %s", exc)
