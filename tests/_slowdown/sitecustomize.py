"""Slow every ONNX Runtime inference down, as on a slower machine, in every process that starts.

Test-only. A test puts this folder first on PYTHONPATH and sets EDGEGW_TEST_SLOWDOWN to a factor
(8 ≈ a Raspberry Pi 4 against this machine's x86 cores): after each model run, the process sleeps
(factor − 1) times as long as the run took, so each inference takes `factor` times as long. Child
processes (the demo's daemons) inherit both variables, so they are slowed too.
"""

from __future__ import annotations

import os
import time
from typing import Any


def _install(factor: float) -> None:
    from edge.models.runner import OrtRunner

    real_run = OrtRunner.run

    def slow_run(self: OrtRunner, inputs: Any) -> Any:
        t0 = time.perf_counter()
        out = real_run(self, inputs)
        time.sleep((factor - 1.0) * (time.perf_counter() - t0))
        return out

    OrtRunner.run = slow_run  # type: ignore[method-assign]


_factor = float(os.environ.get("EDGEGW_TEST_SLOWDOWN", "1") or 1)
if _factor > 1.0:
    _install(_factor)
