"""Serial sensors in the capture daemon: port threads → one reading queue → observations → commit.

Each port has its own reader thread (drivers.serial.transport.SerialSensor, with reconnect and
backoff); they all feed one bounded queue. One hub thread folds readings into observations
(card swipes at once, phones once per dedupe window, randomised MACs only as counts) and commits
them through the same privacy boundary and outbox as the cameras.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from drivers.serial.config import SerialSensorConfig
from drivers.serial.transport import ReadingQueue, SerialSensor
from edge.pipeline.config import DeviceConfig
from edge.pipeline.devices import DeviceObserver

if TYPE_CHECKING:
    from edge.pipeline.commit import Committer


class SensorHub(threading.Thread):
    """Owns every serial sensor of the gateway and commits what they see."""

    def __init__(self, configs: Sequence[SerialSensorConfig], committer: Committer, stop: threading.Event,
                 device_config: DeviceConfig | None = None) -> None:
        super().__init__(name="serial-hub", daemon=True)
        # Large enough that only a stalled hub (the outbox refusing writes for minutes) overflows it;
        # overflow is counted and shown in the status.
        self.queue = ReadingQueue(maxsize=10_000)
        self.sensors = [SerialSensor(c, self.queue) for c in configs]
        sides = {c.id: c.side for c in configs if c.side is not None}
        self.observer = DeviceObserver(device_config, sides=sides)
        self._committer = committer
        self._stop_event = stop
        self.readings = 0

    def run(self) -> None:
        for sensor in self.sensors:
            sensor.start()
        next_tick = 0.0
        while not self._stop_event.is_set():
            reading = self.queue.get(timeout=0.2)
            obs = []
            if reading is not None:
                self.readings += 1
                obs += self.observer.observe(reading)
            now = time.time()
            if now >= next_tick:
                obs += self.observer.tick(now)
                next_tick = now + 1.0
            self._committer.commit(obs, self._stop_event)
        for sensor in self.sensors:
            sensor.stop()
        rest = [self.observer.observe(r) for r in self.queue.drain()]
        self._committer.commit([o for group in rest for o in group] + self.observer.flush(time.time()))

    def status(self) -> dict[str, Any]:
        """Per port: connected, counters, last error (no identifiers)."""
        out: dict[str, Any] = {}
        for sensor in self.sensors:
            st = sensor.status()
            out[st.sensor_id] = {"port": st.port, "format": st.format, "connected": st.connected,
                                 "connects": st.connects, "last_error": st.last_error, "bytes_read": st.bytes_read,
                                 "frames_ok": st.frames_ok, "frames_rejected": dict(st.frames_rejected),
                                 "discarded_bytes": st.discarded_bytes}
        out["_queue_dropped"] = self.queue.dropped
        return out
