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


def slowed_env(factor: float = PI4_FACTOR) -> dict[str, str]:
    """The environment for a child process whose every inference takes `factor` times as long."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SLOWDOWN_DIR), str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["EDGEGW_TEST_SLOWDOWN"] = str(factor)
    return env
