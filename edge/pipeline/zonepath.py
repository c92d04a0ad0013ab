"""A camera path with its obstruction zones on top, for the camera worker.

`ZonedPath` wraps a camera's face or plate path (or nothing, for a camera that only watches a fire
lane) and adds the zone alarms to what it returns. It sees exactly the frames the worker gives the
path: those the motion gate passes (at least one a second, which the background model needs) and,
as `idle`, the time of those it skips. The long-term background is loaded from `background_file`
at start and saved there at the end, so a restart does not relearn the lane from whatever stands
in it at that moment (see docs/alarms.md).

The console's editor can replace the camera's zones while capture runs (`set_zones`): the new set is
handed over to the worker thread, which swaps it in before its next frame, so the zone state is only
ever touched by the thread that runs the zones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from edge.pipeline.tracker import GateLine
from edge.pipeline.worker import FramePath
from edge.pipeline.zoneconfig import ZoneConfig
from edge.pipeline.zones import DwellMonitor, ZoneWatcher
from edge.types import Box, Frame, Observation

log = logging.getLogger(__name__)


class ZonedPath:
    """`inner`'s observations plus the camera's zone alarms (a `FramePath` itself)."""

    def __init__(self, inner: FramePath | None, watcher: ZoneWatcher, background_file: Path | None = None,
                 dwell: DwellMonitor | None = None) -> None:
        self._inner = inner
        self.watcher = watcher
        self.dwell = dwell
        self._background_file = background_file
        self._lock = threading.Lock()
        self._next: tuple[ZoneConfig, ...] | None = None
        self.zone_ids: tuple[str, ...] = self._ids()
        if background_file is not None and watcher.model.load(background_file):
            log.info("camera %s: zone background loaded from %s", watcher.camera, background_file)

    @property
    def last_boxes(self) -> list[Box]:
        """What the inner path detected on the last frame (for the console's overlay and aim gauge)."""
        return list(getattr(self._inner, "last_boxes", []))

    @property
    def gate_line(self) -> GateLine | None:
        """The inner path's gate line."""
        line: GateLine | None = getattr(self._inner, "gate_line", None)
        return line

    def set_gate_line(self, line: GateLine | None) -> None:
        """Give the inner path a new gate line (the console's editor); zones have none."""
        setter = getattr(self._inner, "set_gate_line", None)
        if setter is not None:
            setter(line)

    def _ids(self) -> tuple[str, ...]:
        dwell = tuple(z.id for z in self.dwell.zones) if self.dwell is not None else ()
        return tuple(sorted((*(z.id for z in self.watcher.zones), *dwell)))

    def set_zones(self, zones: Sequence[ZoneConfig]) -> None:
        """Hand the camera's new zones to the worker thread (applied before its next frame)."""
        with self._lock:
            self._next = tuple(zones)

    def _swap(self) -> None:
        with self._lock:
            new, self._next = self._next, None
        if new is None:
            return
        changed = self.watcher.set_zones(new)
        if self.dwell is not None:
            changed = self.dwell.set_zones(new) or changed
        if changed:
            self.zone_ids = self._ids()
            log.info("camera %s: zones now %s", self.watcher.camera, ", ".join(self.zone_ids) or "none")

    def process(self, frame: Frame) -> list[Observation]:
        """The inner path's observations for the frame, then the zones'."""
        self._swap()
        out = self._inner.process(frame) if self._inner is not None else []
        return out + self.watcher.process(frame)

    def idle(self, ts: float) -> list[Observation]:
        """A frame the motion gate skipped: the zones' clocks still run."""
        self._swap()
        out = self._inner.idle(ts) if self._inner is not None else []
        return out + self.watcher.idle(ts)

    def finish(self) -> list[Observation]:
        """End of input: keep the background for the next start."""
        if self._background_file is not None and self.watcher.model.shape is not None:
            try:
                self.watcher.model.save(self._background_file)
            except OSError as exc:  # a full disk must not lose the inner path's last tracks
                log.warning("camera %s: cannot save the zone background: %s", self.watcher.camera, exc)
        return self._inner.finish() if self._inner is not None else []
