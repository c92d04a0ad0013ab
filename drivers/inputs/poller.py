"""One thread per input module: poll, interpret, hand the alarms to a sink (the committer).

The sink is called synchronously from the poll thread and is expected to block until the alarms are
durable (`Committer.commit(obs, stop)`): a press is never dropped, and while the outbox is stuck the
module is simply read later. Read failures back off with jitter, are counted, and after
`offline_after_s` become an `io_offline` alarm, cleared by the next good read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from drivers.inputs.base import DigitalInputSource
from drivers.inputs.config import GpioInputsConfig, ModbusInputsConfig
from drivers.inputs.interpret import InputInterpreter
from drivers.inputs.registry import open_source
from edge.backoff import Backoff
from edge.errors import DriverError
from edge.types import Observation

log = logging.getLogger(__name__)

AlarmSink = Callable[[Sequence[Observation]], None]


class InputPoller(threading.Thread):
    """Polls one module every `poll_interval_s` until `stop` is set."""

    def __init__(self, cfg: ModbusInputsConfig | GpioInputsConfig, sink: AlarmSink, stop: threading.Event,
                 source: DigitalInputSource | None = None) -> None:
        super().__init__(name=f"inputs-{cfg.id}", daemon=True)
        self.cfg = cfg
        self._sink = sink
        self._stop_event = stop
        self._source = source if source is not None else open_source(cfg)
        self.interpreter = InputInterpreter(cfg)
        self.scans = 0
        self.failures = 0
        self.last_error: str | None = None

    def run(self) -> None:
        backoff = Backoff(self.cfg.backoff)
        next_poll = time.monotonic()
        while not self._stop_event.is_set():
            delay = self.poll_once()
            if delay is None:
                backoff.reset()
                next_poll += self.cfg.poll_interval_s
                # Behind (a slow sink, a suspended VM): poll now, without trying to catch up.
                wait = max(0.0, next_poll - time.monotonic())
                if wait == 0.0:
                    next_poll = time.monotonic()
            else:
                wait = min(backoff.next_delay(), self.cfg.offline_after_s / 2)
                next_poll = time.monotonic() + wait
            self._stop_event.wait(wait)
        self._source.close()

    def poll_once(self) -> float | None:
        """One read and its alarms; None on success, else a hint that the caller should back off."""
        try:
            scan = self._source.scan(self.interpreter.channels)
        except DriverError as exc:
            self.failures += 1
            if self.last_error != str(exc):  # once per distinct error, not once per poll
                log.warning("input module %s: %s", self.cfg.id, exc)
            self.last_error = str(exc)
            self._emit(self.interpreter.failed(time.time()))
            return 1.0
        self.scans += 1
        if self.last_error is not None:
            log.info("input module %s answers again", self.cfg.id)
            self.last_error = None
        self._emit(self.interpreter.feed(scan))
        return None

    def _emit(self, observations: list[Observation]) -> None:
        if observations:
            self._sink(observations)

    def status(self) -> dict[str, object]:
        """Counters and input states for the status message (no identifiers here to hide)."""
        return {"kind": self.cfg.kind, "scans": self.scans, "failures": self.failures,
                "offline": self.interpreter.offline, "last_error": self.last_error,
                "inputs": self.interpreter.states()}
