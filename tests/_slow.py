"""Run a child process as on slower hardware: every inference takes `factor` times as long.

See tests/_slowdown/sitecustomize.py, which the child imports at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path

SLOWDOWN_DIR = Path(__file__).parent / "_slowdown"
ROOT = Path(__file__).resolve().parents[1]
PI4_FACTOR = 8.0
"""A Raspberry Pi 4's Cortex-A72 cores against this machine's x86 cores, for these models (roughly)."""


TIME_FACTOR_ENV = "EDGEGW_TEST_TIME_FACTOR"
"""How many times slower this host is than the ones the tests' time limits were set on (default 1).

scripts/arm64-smoke sets it: under qemu-user emulation every instruction is many times slower, and a
limit that a real machine meets with room to spare says nothing about edgegw there."""


def time_factor() -> float:
    """EDGEGW_TEST_TIME_FACTOR as a number >= 1 (1 when unset); a bad value is an error, not ignored."""
    raw = os.environ.get(TIME_FACTOR_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{TIME_FACTOR_ENV}={raw!r}: not a number") from None
    if not factor >= 1.0:
        raise ValueError(f"{TIME_FACTOR_ENV}={raw!r}: must be at least 1")
    return factor


def scaled(seconds: float) -> float:
    """A time limit of `seconds` on the machines it was set on, stretched by this host's time factor."""
    return seconds * time_factor()


def slowed_env(factor: float = PI4_FACTOR) -> dict[str, str]:
    """The environment for a child process whose every inference takes `factor` times as long as on
    the machines the factor is reckoned against.

    On a host already time_factor() times slower (qemu-user emulation), inference is slow by itself:
    only what is left of `factor` is added, at least 1 (no slowdown), so the child runs at the speed
    the test means rather than that speed times the emulation's slowness."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SLOWDOWN_DIR), str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["EDGEGW_TEST_SLOWDOWN"] = str(max(1.0, factor / time_factor()))
    return env
