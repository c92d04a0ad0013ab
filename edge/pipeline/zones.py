"""Camera zones: fire-lane obstruction (消防通道占用) and loitering at the gate.

`ZoneWatcher` runs one camera's obstruction zones on the static-foreground model of
`edge.pipeline.background`; `DwellMonitor` watches tracked faces and plates against its dwell zones.
Both yield `alarm` observations raised once and cleared once, with the zone id, how long and (for
obstruction) how much of the zone was covered. The only identifier an alarm may carry is the plate
of a vehicle track in the zone, which the privacy boundary turns into its pseudonym; nothing else
identifying is ever attached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.pipeline.background import StaticForegroundModel
from edge.pipeline.zoneconfig import BackgroundConfig, ZoneConfig
from edge.types import Box, EventKind, Frame, Observation, RawIdentifier, Scalar, Track


def zone_mask(zone: ZoneConfig, height: int, width: int) -> NDArray[np.bool_]:
    """The zone's pixels on an image of the given size."""
    pts = np.array([[round(x * (width - 1)), round(y * (height - 1))] for x, y in zone.polygon], np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [pts], 1)
    return mask.astype(bool)


def point_in_zone(zone: ZoneConfig, x: float, y: float) -> bool:
    """Whether the normalised point (x, y) lies inside the zone's polygon (even-odd rule)."""
    inside = False
    pts = zone.polygon
    j = len(pts) - 1
    for i in range(len(pts)):
        xi, yi = pts[i]
        xj, yj = pts[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def _obs(zone: ZoneConfig, ts: float, attrs: dict[str, Scalar], plate: RawIdentifier | None) -> Observation:
    return Observation(EventKind.ALARM, zone.camera, ts, subject=plate, attrs={
        "code": zone.rule, "rule": zone.rule, "zone": zone.id, "severity": zone.severity, **attrs})


@dataclass
class ObstructionRule:
    """The raise/clear state machine of one obstruction zone, fed the covered fraction over time."""

    zone: ZoneConfig
    above_since: float | None = None
    last_above: float | None = None
    below_since: float | None = None
    raised: bool = False
    peak: float = 0.0

    def update(self, covered: float, ts: float, plate: RawIdentifier | None = None) -> list[Observation]:
        """Feed the zone's covered fraction at `ts`; returns the raise or the clear, if any."""
        z = self.zone
        if not self.raised:
            if covered >= z.min_covered:
                if self.above_since is None:
                    self.above_since = ts
                self.last_above = ts
                self.peak = max(self.peak, covered)
            elif self.last_above is not None and ts - self.last_above > z.gap_s:
                self.above_since = self.last_above = None
                self.peak = 0.0
            if self.above_since is not None and ts - self.above_since >= z.raise_after_s:
                self.raised = True
                return [_obs(z, ts, {"state": "raised", "covered": round(min(1.0, covered), 3),
                                     "duration_s": round(ts - self.above_since, 1),
                                     "message": f"zone obstructed for {ts - self.above_since:.0f} s"}, plate)]
            return []
        self.peak = max(self.peak, covered)
        if covered < z.min_covered * z.clear_ratio:
            if self.below_since is None:
                self.below_since = ts
            if ts - self.below_since >= z.clear_after_s:
                start = self.above_since if self.above_since is not None else self.below_since
                out = [_obs(z, ts, {"state": "cleared", "covered": round(min(1.0, self.peak), 3),
                                    "duration_s": round(self.below_since - start, 1),
                                    "message": "zone free again"}, None)]
                self.raised = False
                self.above_since = self.last_above = self.below_since = None
                self.peak = 0.0
                return out
        else:
            self.below_since = None
        return []


class ZoneWatcher:
    """One camera's obstruction zones on one static-foreground model (one per camera worker).

    Call `process` with the frames the motion gate passes (it forces one a second even in a still
    scene, which the model needs) and `idle` with the time of the frames it skips: the covered
    fractions then stay as last measured while the clocks run on.
    """

    def __init__(self, camera: str, zones: Sequence[ZoneConfig], background: BackgroundConfig | None = None) -> None:
        self.camera = camera
        self.rules = [ObstructionRule(z) for z in zones if z.camera == camera and z.rule == "obstruction"]
        self.model = StaticForegroundModel(background)
        self._masks: list[NDArray[np.bool_]] = []
        self.covered: dict[str, float] = {r.zone.id: 0.0 for r in self.rules}

    @property
    def zones(self) -> tuple[ZoneConfig, ...]:
        """The obstruction zones watched."""
        return tuple(r.zone for r in self.rules)

    def set_zones(self, zones: Sequence[ZoneConfig]) -> bool:
        """Watch a new set of zones (the console's editor) on the same background model.

        A zone whose config is unchanged keeps its clocks and state; a changed or new one starts
        afresh. Called from the capture loop while the worker runs: the lists are swapped whole.
        Returns whether anything changed.
        """
        mine = tuple(z for z in zones if z.camera == self.camera and z.rule == "obstruction")
        if mine == self.zones:
            return False
        old = {r.zone: r for r in self.rules}
        rules = [old.get(z) or ObstructionRule(z) for z in mine]
        self.covered = {r.zone.id: self.covered.get(r.zone.id, 0.0) if r.zone in old else 0.0 for r in rules}
        self._masks = []
        self.rules = rules
        return True

    def process(self, frame: Frame, plates: Sequence[tuple[Box, RawIdentifier]] = ()) -> list[Observation]:
        """Model the frame (if due) and update every zone.

        `plates`: the last box and plate of each vehicle track now live on this camera; a raise names
        (as a pseudonym, at the boundary) the plate whose ground point is in the zone.
        """
        if not self.rules:
            return []
        h, w = frame.shape
        in_zone = {r.zone.id: plate for box, plate in plates for r in self.rules
                   if point_in_zone(r.zone, (box.x1 + box.x2) / 2.0 / w, box.y2 / h)}
        if not self.model.due(frame.ts):
            return self._advance(frame.ts, in_zone)
        masks = self.model.update(frame.image, frame.ts)
        shape = masks.static.shape
        if not self._masks or self._masks[0].shape != shape:
            self._masks = [zone_mask(r.zone, shape[0], shape[1]) for r in self.rules]
        for rule, mask in zip(self.rules, self._masks, strict=True):
            n = int(mask.sum())
            self.covered[rule.zone.id] = float(masks.static[mask].sum()) / n if n else 0.0
        return self._advance(frame.ts, in_zone)

    def idle(self, ts: float) -> list[Observation]:
        """Advance the zones' clocks to `ts` with the last covered fractions (a skipped frame)."""
        return self._advance(ts, {})

    def _advance(self, ts: float, plates: dict[str, RawIdentifier]) -> list[Observation]:
        out: list[Observation] = []
        for rule in self.rules:
            out += rule.update(self.covered[rule.zone.id], ts, plates.get(rule.zone.id))
        return out


@dataclass
class _Dwell:
    zone: ZoneConfig
    entered: float
    last_seen: float
    raised: bool = False


class DwellMonitor:
    """Dwell zones of one camera against live tracks: feed each track's box as it is updated."""

    def __init__(self, camera: str, zones: Sequence[ZoneConfig], max_gap_s: float = 2.0) -> None:
        self.camera = camera
        self.zones = [z for z in zones if z.camera == camera and z.rule == "dwell"]
        self._max_gap_s = max_gap_s
        self._open: dict[tuple[int, str], _Dwell] = {}
        self._pending: list[Observation] = []  # clears of zones the editor removed

    def set_zones(self, zones: Sequence[ZoneConfig]) -> bool:
        """Watch a new set of dwell zones (the console's editor); returns whether anything changed.

        A dwell open in a zone that is gone or changed ends: a raised alarm in it is cleared (at its
        last-seen time) with the next update, so no alarm stays raised for a zone that no longer exists.
        """
        mine = [z for z in zones if z.camera == self.camera and z.rule == "dwell"]
        if mine == self.zones:
            return False
        for key in [k for k, d in self._open.items() if d.zone not in mine]:
            self._pending += self._close(key, self._open[key].last_seen)
        self.zones = mine
        return True

    def _flush(self) -> list[Observation]:
        out, self._pending = self._pending, []
        return out

    def observe(self, track_id: int, box: Box, ts: float, frame_shape: tuple[int, int],
                plate: RawIdentifier | None = None) -> list[Observation]:
        """A track's box at `ts` on a frame of (height, width); its ground point decides in or out."""
        h, w = frame_shape
        x, y = (box.x1 + box.x2) / 2.0 / w, box.y2 / h  # feet or wheels: where it stands
        out: list[Observation] = []
        for zone in self.zones:
            key = (track_id, zone.id)
            if point_in_zone(zone, x, y):
                d = self._open.setdefault(key, _Dwell(zone, ts, ts))
                d.last_seen = ts
                if not d.raised and ts - d.entered >= zone.dwell_s:
                    d.raised = True
                    out.append(_obs(zone, ts, {"state": "raised", "duration_s": round(ts - d.entered, 1),
                                               "message": f"in the zone for {ts - d.entered:.0f} s"}, plate))
            elif key in self._open:
                out += self._close(key, ts)
        return out

    def update(self, tracks: Sequence[Track[Any]], ts: float, frame_shape: tuple[int, int],
               plates: Mapping[int, RawIdentifier] | None = None) -> list[Observation]:
        """Feed the tracker's open tracks (`IouTracker.live()`) after each detector run; tracks that
        are no longer open are ended. `plates`: the plate read so far of a vehicle track, by id."""
        out: list[Observation] = self._flush()
        ids = set()
        for t in tracks:
            ids.add(t.track_id)
            out += self.observe(t.track_id, t.last_box, ts, frame_shape, (plates or {}).get(t.track_id))
        for gone in {k[0] for k in self._open} - ids:
            out += self.end(gone, ts)
        return out

    def end(self, track_id: int, ts: float) -> list[Observation]:
        """The track ended (the tracker finished it)."""
        out: list[Observation] = []
        for key in [k for k in self._open if k[0] == track_id]:
            out += self._close(key, ts)
        return out

    def expire(self, ts: float) -> list[Observation]:
        """Close dwells whose track has not been seen for `max_gap_s`."""
        out: list[Observation] = self._flush()
        for key in [k for k, d in self._open.items() if ts - d.last_seen > self._max_gap_s]:
            out += self._close(key, ts)
        return out

    def _close(self, key: tuple[int, str], ts: float) -> list[Observation]:
        d = self._open.pop(key)
        if not d.raised:
            return []
        return [_obs(d.zone, ts, {"state": "cleared", "duration_s": round(d.last_seen - d.entered, 1),
                                  "message": "left the zone"}, None)]
