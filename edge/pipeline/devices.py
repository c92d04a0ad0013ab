"""Serial readings to Observations: card swipes at once, phones once per dedupe window.

A card reading becomes a `card_swipe` Observation (a card held on a reader that repeats its frame
is debounced). A MAC reading is folded into a per-device window; when the window closes, one
`device_seen` Observation carries first/last seen, the number of sightings and an RSSI summary.
MACs with the locally-administered bit set are randomised by phones and identify nobody for long:
they are never emitted as identities, only counted in a periodic `device_aggregate` Observation.

Time is always passed in (reading timestamps and `tick(now)`), so the behaviour is deterministic.
Not thread-safe: feed it from one consumer (e.g. a `ReadingQueue`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from edge.pipeline.config import DeviceConfig
from edge.types import EventKind, IdKind, Observation, RawIdentifier, Reading, Scalar

_log = logging.getLogger(__name__)

Side = Literal["in", "out"]


def is_randomised_mac(mac: str) -> bool:
    """True if the locally-administered bit (0x02 of the first octet) is set."""
    return bool(int(mac[:2], 16) & 0x02)


@dataclass(frozen=True, slots=True)
class DeviceStats:
    """Counters of what the observer dropped or folded, for status pages."""

    cards_debounced: int
    devices_overflow: int
    randomised_sightings: int
    ignored: int


@dataclass
class _Window:
    identifier: RawIdentifier
    first_seen: float
    last_seen: float
    format: str
    sightings: int = 0
    channel: int | None = None
    rssi_n: int = 0
    rssi_sum: int = 0
    rssi_min: int = 0
    rssi_max: int = 0

    def add(self, ts: float, rssi: int | None, channel: int | None) -> None:
        self.first_seen = min(self.first_seen, ts)
        self.last_seen = max(self.last_seen, ts)
        self.sightings += 1
        if channel is not None:
            self.channel = channel  # the latest: a sniffer hopping channels reports where it last heard it
        if rssi is not None:
            if self.rssi_n == 0:
                self.rssi_min = self.rssi_max = rssi
            else:
                self.rssi_min = min(self.rssi_min, rssi)
                self.rssi_max = max(self.rssi_max, rssi)
            self.rssi_n += 1
            self.rssi_sum += rssi


@dataclass
class _Aggregate:
    start: float
    sightings: int = 0
    randomised_sightings: int = 0
    overflow: int = 0
    capped: bool = False
    # Keyed digests, not MACs: the aggregate only needs to tell addresses apart.
    distinct: set[bytes] = field(default_factory=set)
    randomised: set[bytes] = field(default_factory=set)


@dataclass
class _Source:
    windows: dict[str, _Window] = field(default_factory=dict)
    aggregate: _Aggregate | None = None


class DeviceObserver:
    """Turns card and MAC Readings into card_swipe, device_seen and device_aggregate Observations."""

    def __init__(
        self,
        config: DeviceConfig | None = None,
        *,
        sides: Mapping[str, Side] | None = None,
        digest_key: bytes | None = None,
    ) -> None:
        self._config = config or DeviceConfig()
        self._sides = dict(sides or {})
        # A per-process random key: digests of randomised MACs are useless outside this process.
        self._key = digest_key if digest_key is not None else os.urandom(16)
        self._sources: dict[str, _Source] = {}
        self._cards: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._cards_debounced = 0
        self._overflow = 0
        self._randomised = 0
        self._ignored = 0

    def stats(self) -> DeviceStats:
        """Counters so far."""
        return DeviceStats(self._cards_debounced, self._overflow, self._randomised, self._ignored)

    def observe(self, reading: Reading) -> list[Observation]:
        """Fold one reading in; returns the Observations that are due (at the reading's time)."""
        kind = reading.identifier.kind
        if kind is IdKind.CARD:
            return self._card(reading)
        if kind is IdKind.MAC:
            return self._mac(reading)
        self._ignored += 1
        return []

    def tick(self, now: float) -> list[Observation]:
        """Close the windows and aggregate periods that have ended by `now`."""
        out: list[Observation] = []
        for source_id, source in self._sources.items():
            self._roll(source_id, source, now, out)
        return out

    def flush(self, now: float) -> list[Observation]:
        """Close every open window and the current aggregate period (at shutdown)."""
        out = self.tick(now)
        for source_id, source in self._sources.items():
            out.extend(self._device_seen(source_id, window) for window in source.windows.values())
            source.windows.clear()
            if source.aggregate is not None:
                out.append(self._aggregate_observation(source_id, source.aggregate, now))
                source.aggregate = None
        return out

    def _add_side(self, source_id: str, attrs: dict[str, Scalar]) -> None:
        side = self._sides.get(source_id)
        if side is not None:
            attrs["direction"] = side  # the schema's name, shared with the camera paths

    # -- cards ----------------------------------------------------------------------------------

    def _card(self, reading: Reading) -> list[Observation]:
        key = (reading.source_id, reading.identifier.value)
        last = self._cards.pop(key, None)
        # Sliding: a card held in the field keeps extending its own quiet period.
        self._cards[key] = reading.ts
        if last is not None and 0 <= reading.ts - last < self._config.card_debounce_s:
            self._cards_debounced += 1
            return []
        while len(self._cards) > self._config.max_cards:
            self._cards.popitem(last=False)
        attrs: dict[str, Scalar] = {"format": reading.format}
        self._add_side(reading.source_id, attrs)
        return [
            Observation(
                kind=EventKind.CARD_SWIPE,
                source_id=reading.source_id,
                ts=reading.ts,
                subject=reading.identifier,
                attrs=attrs,
            )
        ]

    # -- MACs -----------------------------------------------------------------------------------

    def _digest(self, mac: str) -> bytes:
        return hashlib.blake2b(mac.encode("ascii"), key=self._key, digest_size=8).digest()

    def _mac(self, reading: Reading) -> list[Observation]:
        mac = reading.identifier.value
        try:
            randomised = is_randomised_mac(mac) or reading.address_random
        except ValueError:
            self._ignored += 1
            return []
        out: list[Observation] = []
        source = self._sources.setdefault(reading.source_id, _Source())
        self._roll(reading.source_id, source, reading.ts, out)
        if source.aggregate is None:
            period = self._config.aggregate_period_s
            source.aggregate = _Aggregate(start=math.floor(reading.ts / period) * period)
        agg = source.aggregate
        agg.sightings += 1
        digest = self._digest(mac)
        if len(agg.distinct) < self._config.max_distinct:
            agg.distinct.add(digest)
        elif digest not in agg.distinct:
            agg.capped = True
        if randomised:
            self._randomised += 1
            agg.randomised_sightings += 1
            if len(agg.randomised) < self._config.max_distinct:
                agg.randomised.add(digest)
            elif digest not in agg.randomised:
                agg.capped = True
            return out
        window = source.windows.get(mac)
        if window is None:
            if len(source.windows) >= self._config.max_devices:
                self._overflow += 1
                agg.overflow += 1
                return out
            window = source.windows[mac] = _Window(reading.identifier, reading.ts, reading.ts, reading.format)
        window.add(reading.ts, reading.rssi, reading.channel)
        return out

    def _roll(self, source_id: str, source: _Source, now: float, out: list[Observation]) -> None:
        window_s = self._config.window_s
        due = [mac for mac, window in source.windows.items() if now >= window.first_seen + window_s]
        out.extend(self._device_seen(source_id, source.windows.pop(mac)) for mac in due)
        agg = source.aggregate
        period = self._config.aggregate_period_s
        if agg is not None and now >= agg.start + period:
            out.append(self._aggregate_observation(source_id, agg, agg.start + period))
            # Periodic: the next period starts where `now` falls, even if it stays empty.
            source.aggregate = _Aggregate(start=math.floor(now / period) * period)

    def _device_seen(self, source_id: str, window: _Window) -> Observation:
        attrs: dict[str, Scalar] = {
            "format": window.format,
            "first_seen": window.first_seen,
            "last_seen": window.last_seen,
            "sightings": window.sightings,
        }
        if window.rssi_n:
            attrs["rssi_min"] = window.rssi_min
            attrs["rssi_max"] = window.rssi_max
            attrs["rssi_mean"] = round(window.rssi_sum / window.rssi_n, 2)
        if window.channel is not None:
            attrs["channel"] = window.channel
        return Observation(
            kind=EventKind.DEVICE_SEEN,
            source_id=source_id,
            ts=window.last_seen,
            subject=window.identifier,
            attrs=attrs,
        )

    def _aggregate_observation(self, source_id: str, agg: _Aggregate, end: float) -> Observation:
        return Observation(
            kind=EventKind.DEVICE_AGGREGATE,
            source_id=source_id,
            ts=end,
            attrs={
                "window_start": agg.start,
                "window_end": end,
                "sightings": agg.sightings,
                "distinct": len(agg.distinct),
                "randomised": len(agg.randomised),
                "randomised_sightings": agg.randomised_sightings,
                "overflow": agg.overflow,
                "capped": agg.capped,
            },
        )
