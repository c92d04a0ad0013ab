"""One camera's pipeline thread: frames from its queue → motion gate → face or plate path → commit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from edge.framequeue import FrameQueue, QueueClosedError
from edge.pipeline.commit import Committer
from edge.pipeline.motion import MotionGate
from edge.types import Frame, Observation

log = logging.getLogger(__name__)


class FramePath(Protocol):
    """A per-camera pipeline: frames in, observations out."""

    def process(self, frame: Frame) -> list[Observation]:
        """Run detection on a frame."""
        ...

    def idle(self, ts: float) -> list[Observation]:
        """A frame skipped by the motion gate."""
        ...

    def finish(self) -> list[Observation]:
        """End of input."""
        ...


FrameHook = Callable[[Frame, bool, float], None]
"""Told (frame, whether detection ran on it, seconds spent) after each frame: metrics, aim, preview."""

FramePrepare = Callable[[Frame], Frame]
"""Applied to each frame before anything else sees it (the camera's detection masks)."""


class CameraWorker(threading.Thread):
    """Pulls frames of one camera through the motion gate and its path, committing what it sees."""

    def __init__(self, source_id: str, queue: FrameQueue, path: FramePath, *, gate: MotionGate | None,
                 committer: Committer, stop: threading.Event, on_frame: FrameHook | None = None,
                 prepare: FramePrepare | None = None) -> None:
        super().__init__(name=f"pipeline-{source_id}", daemon=True)
        self.source_id = source_id
        self._queue = queue
        self._path = path
        self._gate = gate
        self._committer = committer
        self._stop_event = stop
        self.frames = 0
        self.detected_frames = 0
        self.busy_s = 0.0
        self._on_frame = on_frame
        self._prepare = prepare

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                frame = self._queue.get(timeout=0.2)
            except QueueClosedError:
                break  # the source is exhausted and every frame it gave was processed
            if frame is None:
                continue
            t0 = time.perf_counter()
            self.frames += 1
            detected = False
            try:
                if self._prepare is not None:
                    frame = self._prepare(frame)
                if self._gate is None or self._gate.check(frame):
                    self.detected_frames += 1
                    detected = True
                    obs = self._path.process(frame)
                else:
                    obs = self._path.idle(frame.ts)
            except Exception:  # a bad frame must not kill the camera's pipeline
                log.exception("pipeline %s failed on frame %d; skipping it", self.source_id, frame.index)
                continue
            self._committer.commit(obs, self._stop_event)
            spent = time.perf_counter() - t0
            self.busy_s += spent
            if self._on_frame is not None:
                try:
                    self._on_frame(frame, detected, spent)
                except Exception:  # telemetry and preview must never stop the pipeline
                    log.exception("frame hook of %s failed", self.source_id)
        self._committer.commit(self._path.finish(), self._stop_event)
