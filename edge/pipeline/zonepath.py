"""A camera path with its obstruction zones on top, for the camera worker.

`ZonedPath` wraps a camera's face or plate path (or nothing, for a camera that only watches a fire
lane) and adds the zone alarms to what it returns. It sees exactly the frames the worker gives the
path: those the motion gate passes (at least one a second, which the background model needs) and,
as `idle`, the time of those it skips. The long-term background is loaded from `background_file`
at start and saved there at the end, so a restart does not relearn the lane from whatever stands
in it at that moment (see docs/alarms.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.pipeline.worker import FramePath
from edge.pipeline.zones import ZoneWatcher
from edge.types import Frame, Observation

log = logging.getLogger(__name__)


class ZonedPath:
    """`inner`'s observations plus the camera's zone alarms (a `FramePath` itself)."""

    def __init__(self, inner: FramePath | None, watcher: ZoneWatcher, background_file: Path | None = None) -> None:
        self._inner = inner
        self.watcher = watcher
        self._background_file = background_file
        if background_file is not None and watcher.model.load(background_file):
            log.info("camera %s: zone background loaded from %s", watcher.camera, background_file)

    def process(self, frame: Frame) -> list[Observation]:
        """The inner path's observations for the frame, then the zones'."""
        out = self._inner.process(frame) if self._inner is not None else []
        return out + self.watcher.process(frame)

    def idle(self, ts: float) -> list[Observation]:
        """A frame the motion gate skipped: the zones' clocks still run."""
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
