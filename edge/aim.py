"""Aiming: is a camera close enough for faces and plates? Thresholds, a rolling window, a verdict.

Face width in pixels and plate character height in pixels decide whether recognition can work:
under 40 px a face cannot be matched reliably (warn under 80 px); under 15 px plate characters
cannot be read (warn under 20 px). Capture measures every detection into a one-minute window; the
console's gauge, `edgegw check` and the status message read the verdict from it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from edge.configbase import StrictModel

Verdict = Literal["ok", "warn", "fail", "none"]

PLATE_CHAR_RATIO = 90.0 / 140.0
"""Chinese plates are 140 mm tall with 90 mm characters: the character height from the plate box's."""


class AimConfig(StrictModel):
    """Pixel-density thresholds of the aiming gauge (and of `edgegw check`)."""

    face_fail_px: float = Field(default=40.0, gt=0)
    face_warn_px: float = Field(default=80.0, gt=0)
    plate_char_fail_px: float = Field(default=15.0, gt=0)
    plate_char_warn_px: float = Field(default=20.0, gt=0)
    window_s: float = Field(default=60.0, gt=0)


def judge(value: float | None, fail: float, warn: float) -> Verdict:
    """ok / warn / fail for a measured size; `none` when nothing was measured."""
    if value is None:
        return "none"
    return "fail" if value < fail else "warn" if value < warn else "ok"


@dataclass(frozen=True, slots=True)
class AimSummary:
    """What the window saw of one measure (face width or plate character height)."""

    n: int
    median: float | None
    p10: float | None
    verdict: Verdict

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {"n": self.n, "median_px": self.median, "p10_px": self.p10, "verdict": self.verdict}


def _summary(values: list[float], fail: float, warn: float) -> AimSummary:
    if not values:
        return AimSummary(0, None, None, "none")
    s = sorted(values)
    median = round(s[len(s) // 2], 1)
    p10 = round(s[int(len(s) * 0.1)], 1)
    return AimSummary(len(s), median, p10, judge(median, fail, warn))


class AimWindow:
    """Sizes measured over the last `window_s` seconds for one camera (thread-safe, bounded)."""

    def __init__(self, config: AimConfig | None = None, max_samples: int = 5000) -> None:
        self.config = config or AimConfig()
        self._faces: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._plates: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def add_face(self, width_px: float, ts: float | None = None) -> None:
        """One detected face's width."""
        with self._lock:
            self._faces.append((ts or time.time(), width_px))

    def add_plate(self, plate_height_px: float, ts: float | None = None) -> None:
        """One detected plate's box height (the character height is derived)."""
        with self._lock:
            self._plates.append((ts or time.time(), plate_height_px * PLATE_CHAR_RATIO))

    def summary(self, now: float | None = None) -> dict[str, AimSummary]:
        """{"face_width": ..., "plate_char_height": ...} over the window."""
        cutoff = (now or time.time()) - self.config.window_s
        c = self.config
        with self._lock:
            while self._faces and self._faces[0][0] < cutoff:
                self._faces.popleft()
            while self._plates and self._plates[0][0] < cutoff:
                self._plates.popleft()
            faces = [v for _, v in self._faces]
            plates = [v for _, v in self._plates]
        return {"face_width": _summary(faces, c.face_fail_px, c.face_warn_px),
                "plate_char_height": _summary(plates, c.plate_char_fail_px, c.plate_char_warn_px)}
