"""Serial transport: a reader thread per port that reconnects with backoff and feeds a decoder.

A USB adapter that is unplugged makes reads fail; the thread closes the port, forgets the partial
frame and retries with `edge.backoff.Backoff` until the device node is back. Readings go to a
callback; `ReadingQueue` is a bounded one for handing them to a single consumer thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import serial

from drivers.serial.base import DecodedFrame
from drivers.serial.config import SerialSensorConfig
from drivers.serial.registry import make_decoder
from edge.backoff import Backoff
from edge.types import Reading

_log = logging.getLogger(__name__)

ReadingSink = Callable[[Reading], None]
FrameSink = Callable[[DecodedFrame], None]

_PARITY: Mapping[str, str] = MappingProxyType(
    {
        "none": serial.PARITY_NONE,
        "even": serial.PARITY_EVEN,
        "odd": serial.PARITY_ODD,
        "mark": serial.PARITY_MARK,
        "space": serial.PARITY_SPACE,
    }
)
_MAX_READ = 4096


@dataclass(frozen=True, slots=True)
class PortStatus:
    """A snapshot of one port: link state, last error and traffic counters."""

    sensor_id: str
    port: str
    format: str
    connected: bool
    connects: int
    last_error: str | None
    bytes_read: int
    frames_ok: int
    frames_rejected: Mapping[str, int] = field(default_factory=dict)
    discarded_bytes: int = 0
    sink_errors: int = 0

    @property
    def rejected_total(self) -> int:
        """Rejected frames over all reasons."""
        return sum(self.frames_rejected.values())


class ReadingQueue:
    """A bounded, thread-safe sink: port threads put, one consumer gets; overflow is counted."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._queue: queue.Queue[Reading] = queue.Queue(maxsize)
        self._lock = threading.Lock()
        self._dropped = 0

    def __call__(self, reading: Reading) -> None:
        """Enqueue without blocking the port thread; drop (and count) when the consumer lags."""
        try:
            self._queue.put_nowait(reading)
        except queue.Full:
            with self._lock:
                self._dropped += 1
                dropped = self._dropped
            if dropped == 1 or dropped % 1000 == 0:
                _log.warning("reading queue full: %d readings dropped so far", dropped)

    @property
    def dropped(self) -> int:
        """Readings dropped because the queue was full."""
        with self._lock:
            return self._dropped

    def get(self, timeout: float | None = None) -> Reading | None:
        """The next reading, or None if none arrives within `timeout` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[Reading]:
        """Every reading queued now, without waiting."""
        out: list[Reading] = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out


class SerialSensor:
    """One serial sensor: opens its port, decodes what arrives, reconnects after failures."""

    def __init__(
        self,
        config: SerialSensorConfig,
        sink: ReadingSink,
        *,
        frame_sink: FrameSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._sink = sink
        self._frame_sink = frame_sink
        self._clock = clock
        self._decoder = make_decoder(config.format)
        self._backoff = Backoff(config.backoff)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._port: Any = None
        self._connected = False
        self._connects = 0
        self._last_error: str | None = None
        self._bytes = 0
        self._sink_errors = 0

    @property
    def config(self) -> SerialSensorConfig:
        """The sensor's configuration."""
        return self._config

    def start(self) -> None:
        """Start the reader thread."""
        if self._thread is not None:
            raise RuntimeError("sensor already started")
        self._thread = threading.Thread(target=self._run, name=f"serial-{self._config.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reader thread and close the port."""
        self._stop.set()
        with self._cond:
            port = self._port
        cancel = getattr(port, "cancel_read", None)
        if cancel is not None:
            # Wakes a read blocked in select() at once; errors mean the port is going anyway.
            with contextlib.suppress(OSError, serial.SerialException):
                cancel()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> SerialSensor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_connected(self, timeout: float, connects: int = 1) -> bool:
        """Wait until the port is open and has been opened at least `connects` times."""
        with self._cond:
            return self._cond.wait_for(lambda: self._connected and self._connects >= connects, timeout)

    def status(self) -> PortStatus:
        """A snapshot of the port's state and counters."""
        with self._cond:
            stats = self._decoder.stats()
            return PortStatus(
                sensor_id=self._config.id,
                port=self._config.port,
                format=self._config.format,
                connected=self._connected,
                connects=self._connects,
                last_error=self._last_error,
                bytes_read=self._bytes,
                frames_ok=stats.accepted,
                frames_rejected=stats.rejected,
                discarded_bytes=stats.discarded_bytes,
                sink_errors=self._sink_errors,
            )

    # -- the reader thread ------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            port = self._open(failures)
            if port is not None:
                failures = 0
                try:
                    self._pump(port)
                except (serial.SerialException, OSError) as exc:
                    failures = 1  # the loss is logged here; the reopen attempts quietly
                    self._record_error(f"read failed: {exc}")
                    _log.warning(
                        "serial %s: %s lost (%s); reconnecting with backoff",
                        self._config.id,
                        self._config.port,
                        type(exc).__name__,
                    )
                finally:
                    self._close(port)
            else:
                failures += 1
            if not self._stop.is_set():
                self._stop.wait(self._backoff.next_delay())
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _open(self, failures: int) -> Any:
        cfg = self._config
        options: dict[str, Any] = {
            "baudrate": cfg.effective_baud,
            "bytesize": cfg.bytesize,
            "parity": _PARITY[cfg.parity],
            "stopbits": cfg.stopbits,
            "timeout": cfg.read_timeout_s,
        }
        try:
            if "://" in cfg.port:
                port: Any = serial.serial_for_url(cfg.port, **options)
            else:
                # exclusive: a second process on the same reader would steal half of every frame.
                port = serial.Serial(cfg.port, exclusive=True, **options)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._record_error(f"open failed: {exc}")
            # Once per outage at WARNING; the retries while a device stays unplugged at DEBUG.
            level = logging.WARNING if failures == 0 else logging.DEBUG
            _log.log(level, "serial %s: cannot open %s (%s)", cfg.id, cfg.port, type(exc).__name__)
            return None
        with self._cond:
            self._port = port
            self._connected = True
            self._connects += 1
            self._cond.notify_all()
        self._backoff.reset()
        _log.info("serial %s: connected to %s (%s, %d baud)", cfg.id, cfg.port, cfg.format, cfg.effective_baud)
        return port

    def _close(self, port: Any) -> None:
        with self._cond:
            self._port = None
            self._connected = False
            # A frame cut by the disconnect must not be glued to bytes from the next connection.
            self._decoder.reset()
            self._cond.notify_all()
        with contextlib.suppress(serial.SerialException, OSError):  # already gone with the device
            port.close()

    def _record_error(self, message: str) -> None:
        with self._cond:
            self._last_error = message

    def _pump(self, port: Any) -> None:
        while not self._stop.is_set():
            waiting = int(port.in_waiting)
            data = bytes(port.read(min(max(waiting, 1), _MAX_READ)))
            if not data:
                continue
            ts = self._clock()
            with self._cond:
                self._bytes += len(data)
                frames = self._decoder.feed(data)
            for frame in frames:
                self._deliver(frame, ts)

    def _deliver(self, frame: DecodedFrame, ts: float) -> None:
        try:
            if self._frame_sink is not None:
                self._frame_sink(frame)
            self._sink(frame.to_reading(self._config.id, ts))
        except Exception as exc:  # a consumer bug must not take the port down; logged without data
            with self._cond:
                self._sink_errors += 1
            _log.error("serial %s: reading sink failed (%s)", self._config.id, type(exc).__name__)
