"""Runs each camera in its own thread: reconnects with backoff, paces files, reports status.

A camera thread reads frames from its driver and puts them into a latest-wins queue, so a slow
pipeline drops old frames (counted) instead of stalling capture. When `open` or `read` fails, the
thread closes the driver, waits an exponentially growing, jittered delay and opens it again. A finite
source (a non-looping file) ends as `finished` and closes its queue, which tells the pipeline to
flush; `stop` ends every thread as `stopped`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from drivers.camera.base import CameraDriver
from drivers.camera.config import CameraConfig
from drivers.camera.redact import redact_text
from drivers.camera.registry import create_driver
from edge.backoff import Backoff
from edge.compat import StrEnum
from edge.configbase import BackoffConfig
from edge.errors import ConfigError, DriverError
from edge.framequeue import FrameQueue
from edge.types import Frame

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 300
_FPS_WINDOW_S = 5.0
# A real-time file that fell this far behind (a stalled pipeline, a suspended VM) restarts its
# clock instead of bursting out the frames it "owes".
_MAX_PACE_LAG_S = 1.0


class CameraState(StrEnum):
    """Where a camera thread is."""

    STARTING = "starting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A camera's status as the gateway reports it; no field ever holds credentials."""

    source_id: str
    kind: str
    target: str
    state: CameraState
    frames_read: int
    frames_dropped: int
    reconnects: int
    last_error: str | None
    fps: float
    last_frame_ts: float | None


class FrameSink(Protocol):
    """Where a camera thread puts frames (a `FrameQueue`)."""

    def put(self, item: Frame) -> bool:
        """Add a frame without blocking; True if an older frame was dropped for it."""
        ...

    def close(self) -> None:
        """No more frames will come."""
        ...

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block until a put would evict nothing; False on timeout."""
        ...


def _on_the_wall_clock(frame: Frame, *, paced: bool, lossless: bool) -> Frame:
    """Stamp a released frame on the gateway's one clock (the wall clock), which events share.

    A paced source that drops frames stands for a live camera: its frame was "captured" now. A
    lossless source keeps its clip's timeline, which must never run ahead of the wall clock (an event
    from the future would fuse with nothing that happens now). Live devices stamp at capture.
    """
    now = time.time()
    if paced and not lossless:
        return replace(frame, ts=now)
    if lossless and frame.ts > now:
        return replace(frame, ts=now)
    return frame


def _error_text(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
    text = redact_text(text)
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


class CameraThread:
    """One camera's thread: the read loop, reconnects and counters."""

    def __init__(
        self, driver: CameraDriver, sink: FrameSink, backoff: BackoffConfig | None = None, *, close_sink: bool = True
    ) -> None:
        self._driver = driver
        self._sink = sink
        self._backoff = Backoff(backoff or BackoffConfig())
        self._close_sink = close_sink
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._state = CameraState.STARTING
        self._frames_read = 0
        self._frames_dropped = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._last_frame_ts: float | None = None
        self._frame_times: deque[float] = deque(maxlen=128)

    @property
    def source_id(self) -> str:
        """The camera id."""
        return self._driver.source_id

    @property
    def status(self) -> CameraStatus:
        """A consistent snapshot of the camera's state and counters."""
        info = self._driver.status
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._frame_times if now - t <= _FPS_WINDOW_S]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else 0.0
            return CameraStatus(
                source_id=self.source_id,
                kind=info.kind,
                target=redact_text(info.target),
                state=self._state,
                frames_read=self._frames_read,
                frames_dropped=self._frames_dropped,
                reconnects=self._reconnects,
                last_error=self._last_error,
                fps=round(fps, 2),
                last_frame_ts=self._last_frame_ts,
            )

    def start(self) -> None:
        """Start the camera thread."""
        if self._thread is not None:
            raise RuntimeError(f"camera {self.source_id} already started")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.source_id}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to stop after the current read."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the thread has ended (finished or stopped); True if it has."""
        return self._done.wait(timeout)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._driver.open()
                except Exception as exc:  # supervisor loop: any failure means "retry later"
                    self._failed(exc)
                    continue
                self._connected()
                try:
                    finished = self._pump()
                except Exception as exc:  # supervisor loop: any failure means "reconnect"
                    self._close_driver()
                    self._failed(exc)
                    continue
                self._close_driver()
                if finished:
                    self._set_state(CameraState.FINISHED)
                    log.info("camera %s: source finished after %d frames", self.source_id, self._frames_read)
                    return
        finally:
            with self._lock:
                if self._state is not CameraState.FINISHED:
                    self._state = CameraState.STOPPED
            if self._close_sink:
                self._sink.close()
            self._done.set()

    def _pump(self) -> bool:
        """Read until the source ends (True) or a stop is asked (False); read errors propagate."""
        pace = self._driver.pace_fps
        lossless = self._driver.lossless
        clock_start: float | None = None
        paced = 0
        first = True
        while not self._stop.is_set():
            frame = self._driver.read()
            if frame is None:
                return True
            if first:
                # Only a connection that delivers resets the backoff; one that opens and then
                # fails at once keeps backing off.
                self._backoff.reset()
                first = False
            if pace is not None:
                now = time.monotonic()
                if clock_start is None:
                    clock_start = now
                delay = clock_start + paced / pace - now
                if delay > 0.0:
                    if self._stop.wait(delay):
                        return False
                elif delay < -_MAX_PACE_LAG_S:
                    clock_start, paced = now, 0
                paced += 1
            while lossless and not self._sink.wait_for_room(0.2):
                if self._stop.is_set():
                    return False
            frame = _on_the_wall_clock(frame, paced=pace is not None, lossless=lossless)
            evicted = self._sink.put(frame)
            with self._lock:
                self._frames_read += 1
                self._frames_dropped += int(evicted)
                self._last_frame_ts = frame.ts
                self._frame_times.append(time.monotonic())
        return False

    def _connected(self) -> None:
        with self._lock:
            retries = self._backoff.attempts
            self._state = CameraState.CONNECTED
        if retries:
            log.info("camera %s: connected after %d failed attempts", self.source_id, retries)
        else:
            log.info("camera %s: connected to %s", self.source_id, redact_text(self._driver.status.target))

    def _failed(self, exc: BaseException) -> None:
        text = _error_text(exc)
        delay = self._backoff.next_delay()
        with self._lock:
            self._reconnects += 1
            self._last_error = text
            self._state = CameraState.RECONNECTING
        # Once per failure streak at WARNING; the repeats of an unplugged camera go to DEBUG.
        level = logging.WARNING if self._backoff.attempts == 1 else logging.DEBUG
        log.log(level, "camera %s: %s; retrying in %.1f s", self.source_id, text, delay)
        if not isinstance(exc, DriverError):
            # A non-driver exception is a bug; keep its traceback out of normal logs, which must
            # never risk quoting a camera URL.
            log.debug("camera %s: unexpected %s", self.source_id, type(exc).__name__, exc_info=True)
        self._stop.wait(delay)

    def _close_driver(self) -> None:
        try:
            self._driver.close()
        except Exception as exc:  # closing a broken device must not kill the thread
            log.debug("camera %s: close failed: %s", self.source_id, _error_text(exc))

    def _set_state(self, state: CameraState) -> None:
        with self._lock:
            self._state = state


class CameraSupervisor:
    """Owns the camera threads: start, status, wait for the finite ones, clean stop."""

    def __init__(self) -> None:
        self._workers: dict[str, CameraThread] = {}
        self._started = False

    def add(
        self, driver: CameraDriver, sink: FrameSink, backoff: BackoffConfig | None = None, *, close_sink: bool = True
    ) -> CameraThread:
        """Supervise a driver that feeds `sink`; camera ids must be unique."""
        if driver.source_id in self._workers:
            raise ConfigError(f"camera id {driver.source_id!r} is used twice")
        worker = CameraThread(driver, sink, backoff, close_sink=close_sink)
        self._workers[driver.source_id] = worker
        if self._started:
            worker.start()
        return worker

    def add_camera(self, config: CameraConfig) -> FrameQueue:
        """Build a camera from its config; return the queue its frames arrive in."""
        queue = FrameQueue(config.queue_size)
        self.add(create_driver(config), queue, config.backoff)
        return queue

    @property
    def source_ids(self) -> list[str]:
        """The supervised camera ids, in the order added."""
        return list(self._workers)

    def start(self) -> None:
        """Start every camera thread."""
        self._started = True
        for worker in self._workers.values():
            worker.start()

    def statuses(self) -> list[CameraStatus]:
        """The status of every camera, in the order added."""
        return [worker.status for worker in self._workers.values()]

    def status(self, source_id: str) -> CameraStatus:
        """One camera's status."""
        return self._workers[source_id].status

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every camera has finished or stopped; True if all have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers.values():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not worker.join(remaining):
                return False
        return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop every camera thread; True if all ended within `timeout` seconds."""
        for worker in self._workers.values():
            worker.request_stop()
        ok = self.wait(timeout)
        if not ok:
            stuck = [s.source_id for s in self.statuses() if s.state not in (CameraState.STOPPED, CameraState.FINISHED)]
            log.warning("camera threads still running after %.1f s: %s", timeout, ", ".join(stuck))
        return ok

    def __enter__(self) -> CameraSupervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def supervise(configs: Sequence[CameraConfig]) -> tuple[CameraSupervisor, dict[str, FrameQueue]]:
    """A supervisor for these cameras (not started) and each camera's frame queue by id."""
    supervisor = CameraSupervisor()
    queues = {config.id: supervisor.add_camera(config) for config in configs}
    return supervisor, queues
