"""Raspberry Pi (any Linux gpiochip) inputs through libgpiod's Python bindings (`gpiod` >= 2).

`gpiod` is imported only when a GPIO module is configured, so gateways without it (and the tests,
which use the protocol's fake) never need it. The kernel's own debounce is not relied on (not every
chip supports it); the interpreter debounces in software for every source alike.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from drivers.inputs.base import InputScan
from drivers.inputs.config import GpioInputsConfig
from edge.errors import DriverError


class GpioSource:
    """A `DigitalInputSource` on lines of one gpiochip, requested as inputs with the configured bias."""

    def __init__(self, cfg: GpioInputsConfig, gpiod_module: Any | None = None) -> None:
        self._cfg = cfg
        self._gpiod = gpiod_module
        self._request: Any | None = None

    def _open(self, channels: tuple[int, ...]) -> Any:
        if self._request is not None:
            return self._request
        try:
            gpiod: Any = self._gpiod
            if gpiod is None:
                import importlib

                gpiod = importlib.import_module("gpiod")
                importlib.import_module("gpiod.line")
            line = gpiod.line
            bias = {"pull_up": line.Bias.PULL_UP, "pull_down": line.Bias.PULL_DOWN,
                    "disabled": line.Bias.DISABLED}[self._cfg.bias]
            settings = gpiod.LineSettings(direction=line.Direction.INPUT, bias=bias)
            self._request = gpiod.request_lines(self._cfg.chip, consumer=f"edgegw-{self._cfg.id}",
                                                config={channels: settings})
        except ImportError as exc:
            raise DriverError(f"gpio module {self._cfg.id}: the gpiod package (libgpiod >= 2 bindings) is not "
                              "installed: pip install 'edgegw[inputs]'") from exc
        except OSError as exc:
            raise DriverError(f"gpio module {self._cfg.id}: cannot request lines on {self._cfg.chip}: {exc}") from exc
        return self._request

    def scan(self, channels: tuple[int, ...]) -> InputScan:
        """Read the line levels; a closed contact is `closed_level`."""
        request = self._open(channels)
        try:
            values = request.get_values(list(channels))
        except OSError as exc:
            self.close()
            raise DriverError(f"gpio module {self._cfg.id}: read failed: {exc}") from exc
        want_high = self._cfg.closed_level == "high"
        # gpiod.line.Value.ACTIVE/INACTIVE compare by value; lines are requested active-high, so
        # ACTIVE means a high level.
        closed = {ch: (int(getattr(v, "value", v)) == 1) == want_high for ch, v in zip(channels, values, strict=True)}
        return InputScan(time.time(), closed, {})

    def close(self) -> None:
        """Release the lines."""
        if self._request is not None:
            request, self._request = self._request, None
            with contextlib.suppress(OSError):  # the chip went away: nothing left to release
                request.release()
