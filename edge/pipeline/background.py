"""A dual-rate background model that finds *static* foreground: things that arrived and stayed.

Two running backgrounds of the same low-resolution grey image (after Porikli, Ivanov and Haga,
"Robust abandoned object detection using dual foregrounds", EURASIP JASP 2008):

- the short-term one follows the scene within seconds (`short_tau_s`): something that stopped
  moving melts into it, so a pixel that differs from it is *moving*;
- the long-term one follows only slow change (`long_tau_s`) and is updated only where the scene
  matches it (conservative update), so a parked object never melts into it.

A pixel that differs from the long-term background but not from the short-term one is static
foreground: a stall, stacked goods, a parked car. A person walking through differs from both and is
not counted; a person who pauses is counted only for as long as they pause. Light ramps are taken
out by a global gain (the ratio of the two images' medians) before either comparison, and the
thresholds are relative to the background's brightness. A pixel that stays static foreground for
`absorb_after_s` (a new bench, a repainted wall, or an object present at start-up and then removed)
is taken into the long-term background, so no change alarms forever.

Everything is numpy on a ~160 px wide image: a few hundred microseconds a frame.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.pipeline.zoneconfig import BackgroundConfig


@dataclass(frozen=True, slots=True)
class ForegroundMasks:
    """One model step: static and moving foreground (HxW bool at the model's size)."""

    ts: float
    static: NDArray[np.bool_]
    moving: NDArray[np.bool_]
    gain: float


class StaticForegroundModel:
    """The two backgrounds of one camera (not thread-safe: one per camera worker)."""

    def __init__(self, config: BackgroundConfig | None = None) -> None:
        self.config = config or BackgroundConfig()
        self._long: NDArray[np.float32] | None = None
        self._short: NDArray[np.float32] | None = None
        self._static_age: NDArray[np.float32] | None = None
        self._last_ts: float | None = None
        self._kernel = np.ones((3, 3), np.uint8)
        self.steps = 0
        self.resets = 0

    @property
    def shape(self) -> tuple[int, int] | None:
        """(height, width) of the modelled image, once the first frame is in."""
        return None if self._long is None else (int(self._long.shape[0]), int(self._long.shape[1]))

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        """The model's (height, width) for frames of the given size."""
        w = min(self.config.width, width)
        return max(8, round(height * w / width)), w

    def _grey(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        h, w = self.size_for(int(image.shape[0]), int(image.shape[1]))
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        # A little blur: sensor noise and compression blocks must not count as foreground.
        return np.asarray(cv2.GaussianBlur(grey, (5, 5), 0), dtype=np.float32)

    def save(self, path: Path) -> None:
        """Keep the long-term background across a restart (about 60 KB at 160 px).

        Without it a restart relearns the scene from its first frame: a car parked in the lane at
        that moment is taken for background (and missed), and when it leaves the freed lane looks
        like a new obstruction until `absorb_after_s`. An installer can also save the model once
        over the empty lane at commissioning, as the reference.
        """
        if self._long is None:
            raise ValueError("nothing modelled yet")
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, self._long)
        os.replace(tmp, path)  # atomic: a crash mid-write leaves the previous file

    def load(self, path: Path) -> bool:
        """Start from a saved long-term background; False (and a fresh start) if missing or of another size."""
        try:
            long = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return False
        if long.ndim != 2 or long.dtype != np.float32:
            return False
        self._long = long
        self._short = long.copy()
        self._static_age = np.zeros_like(long)
        return True

    def due(self, ts: float) -> bool:
        """Whether a frame at `ts` should be modelled (throttled to `sample_interval_s`)."""
        return self._last_ts is None or ts - self._last_ts >= self.config.sample_interval_s

    def update(self, image: NDArray[np.uint8], ts: float) -> ForegroundMasks:
        """Model one BGR (or grey) frame taken at `ts`."""
        grey = self._grey(image)
        if self._long is not None and self._last_ts is None and grey.shape == self._long.shape:
            self._last_ts = ts  # a loaded background: compare from this first frame on
        if self._long is None or self._short is None or self._static_age is None or grey.shape != self._long.shape:
            self._long, self._short = grey.copy(), grey.copy()
            self._static_age = np.zeros_like(grey)
            self._last_ts = ts
            empty = np.zeros(grey.shape, bool)
            return ForegroundMasks(ts, empty, empty, 1.0)
        dt = max(0.0, ts - (self._last_ts if self._last_ts is not None else ts))
        self._last_ts = ts
        self.steps += 1
        cfg = self.config
        # Global gain: a light ramp scales the whole picture; one static object barely moves the median.
        med = float(np.median(grey[::2, ::2]))
        gain = float(np.clip(float(np.median(self._long[::2, ::2])) / med, 0.33, 3.0)) if med > 1.0 else 1.0
        img = grey * gain
        thr_long = np.maximum(cfg.abs_threshold, cfg.rel_threshold * self._long)
        thr_short = np.maximum(cfg.abs_threshold, cfg.rel_threshold * self._short)
        fg_long = np.abs(img - self._long) > thr_long
        fg_short = np.abs(img - self._short) > thr_short
        if float(fg_short.mean()) > cfg.reset_fraction and float(fg_long.mean()) > cfg.reset_fraction:
            # Most of the picture changed at once: the camera moved, not the scene. Relearn it, or
            # every wall and kerb would become "static foreground" a few seconds later.
            self._long, self._short = img.copy(), img.copy()
            self._static_age = np.zeros_like(img)
            self.resets += 1
            empty = np.zeros(img.shape, bool)
            return ForegroundMasks(ts, empty, empty, gain)
        static_raw = fg_long & ~fg_short
        # Opening removes isolated pixels (noise, edges that shimmer) before anything is counted.
        static = cv2.morphologyEx(static_raw.astype(np.uint8), cv2.MORPH_OPEN, self._kernel).astype(bool)

        a_short = 1.0 - math.exp(-dt / cfg.short_tau_s)
        a_long = 1.0 - math.exp(-dt / cfg.long_tau_s)
        self._short += np.float32(a_short) * (img - self._short)
        # Conservative: the long-term background learns only where the scene matches it...
        upd = ~fg_long
        self._long[upd] += np.float32(a_long) * (img[upd] - self._long[upd])
        # ...and where the scene has disagreed for too long, the disagreement becomes the background.
        self._static_age = np.where(fg_long, self._static_age + np.float32(dt), np.float32(0.0))
        absorb = self._static_age >= cfg.absorb_after_s
        if absorb.any():
            self._long[absorb] = img[absorb]
            self._static_age[absorb] = 0.0
        return ForegroundMasks(ts, static, fg_short, gain)
