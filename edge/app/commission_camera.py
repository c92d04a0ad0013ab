"""Commissioning checks of one camera, from one sampling session: reach, frame, rate, pixel density.

The camera is opened once per run: a few seconds of frames answer whether it is reachable, whether
the picture is alive (not black, not frozen), whether it delivers the configured rate (±20 %), and
how large faces or plate characters appear (the aiming thresholds). Each check reads that sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from drivers.camera.capture import read_credentials
from drivers.camera.config import RtspCameraConfig, UsbCameraConfig
from drivers.camera.probe import probe_stream
from drivers.camera.registry import create_driver
from edge.aim import PLATE_CHAR_RATIO, judge
from edge.app.config import Config
from edge.app.wiring import runtime_options
from edge.errors import EdgeError

Status = Literal["ok", "warn", "fail", "skip"]
Outcome = tuple[Status, str, str]
FPS_TOLERANCE = 0.20
_MAX_KEPT = 24  # frames kept for the density measurement
_STAND_S = 30.0


@dataclass
class _Sample:
    reach: Outcome | None = None
    first_frame_s: float | None = None
    stamps: list[float] = field(default_factory=list)
    frames: list[NDArray[np.uint8]] = field(default_factory=list)
    shape: tuple[int, int] | None = None
    nominal_fps: float | None = None


def _expected_fps(cam: Any, driver: Any) -> float | None:
    pace: float | None = getattr(driver, "pace_fps", None)
    if pace:
        return pace
    if isinstance(cam, UsbCameraConfig) and cam.fps:
        return float(cam.fps)
    return None


class CameraSession:
    """Samples one camera once and answers its four checks."""

    def __init__(self, cam: Any, cfg: Config, kind: str | None, *, timeout_s: float, sample_s: float,
                 interactive: bool, prompt: Callable[[str], None]) -> None:
        self.cam = cam
        self._cfg = cfg
        self._kind = kind
        self._timeout_s = timeout_s
        self._sample_s = sample_s
        self._interactive = interactive
        self._prompt = prompt
        self._sample: _Sample | None = None

    def _take(self) -> _Sample:
        if self._sample is not None:
            return self._sample
        sample = self._sample = _Sample()
        cam = self.cam
        if isinstance(cam, RtspCameraConfig):
            creds = read_credentials(cam.credentials_file) if cam.credentials_file else None
            probe = probe_stream(cam.url, creds, timeout_s=min(5.0, cam.open_timeout_s))
            if probe.fault != "ok":
                sample.reach = ("fail", probe.detail, probe.hint)
                return sample
        driver = create_driver(cam)
        t0 = time.monotonic()
        try:
            driver.open()
        except EdgeError as exc:
            sample.reach = ("fail", f"{cam.kind}: cannot open: {exc}", "check the camera's address or device path")
            return sample
        try:
            self._read(driver, sample, t0, self._sample_s)
        finally:
            driver.close()
        sample.nominal_fps = _expected_fps(cam, driver)
        if sample.first_frame_s is None:
            sample.reach = ("fail", f"{cam.kind}: opened but no frame within {self._timeout_s:.0f} s",
                            "check the stream settings (codec H.264/MJPEG, resolution) and the network bandwidth")
        else:
            h, w = sample.shape or (0, 0)
            sample.reach = ("ok", f"{cam.kind}: first frame {w}x{h} after {sample.first_frame_s:.1f} s", "")
        return sample

    def _read(self, driver: Any, sample: _Sample, t0: float, sample_s: float) -> None:
        deadline = t0 + self._timeout_s
        end: float | None = None
        # Recorded sources are paced like the supervisor paces them; live devices set their own rate.
        pace: float | None = getattr(driver, "pace_fps", None)
        next_at = t0
        while True:
            if pace:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + 1.0 / pace, time.monotonic() - 1.0)
            now = time.monotonic()
            if (end is None and now >= deadline) or (end is not None and now >= end):
                return
            frame = driver.read()
            if frame is None:
                if getattr(driver, "status", None) is not None and getattr(driver.status, "finished", False):
                    return
                continue
            now = time.monotonic()
            if sample.first_frame_s is None:
                sample.first_frame_s = now - t0
                sample.shape = frame.shape
                end = now + sample_s
            sample.stamps.append(now)
            if len(sample.frames) < _MAX_KEPT or len(sample.stamps) % 5 == 0:
                sample.frames.append(frame.image)
                if len(sample.frames) > _MAX_KEPT:
                    sample.frames.pop(1)

    def reach(self) -> Outcome:
        """Reachable, with a distinct fix for refused / 401 / 404 / timeout."""
        out = self._take().reach
        assert out is not None
        return out

    def _need_frames(self) -> _Sample | Outcome:
        sample = self._take()
        if not sample.frames:
            return "skip", "no frames (see camera.reach)", ""
        return sample

    def frame(self) -> Outcome:
        """A frame that is neither black nor frozen."""
        got = self._need_frames()
        if not isinstance(got, _Sample):
            return got
        grey = [f.mean(axis=2) if f.ndim == 3 else f.astype(np.float64) for f in got.frames]
        bright = max(float(np.percentile(g, 99)) for g in grey)
        if bright < 16:
            return "fail", f"the picture is black (99th percentile brightness {bright:.0f}/255)", \
                "remove the lens cap, check the IR illuminator at night and the exposure settings"
        if len(got.frames) >= 2 and all(np.array_equal(got.frames[0], f) for f in got.frames[1:]):
            return "fail", f"the picture is frozen ({len(got.frames)} identical frames)", \
                "the camera or its encoder has hung: power-cycle it; check its firmware"
        h, w = got.shape or (0, 0)
        return "ok", f"{w}x{h}, live picture (brightness p99 {bright:.0f}/255)", ""

    def fps(self) -> Outcome:
        """Measured rate within ±20 % of the configured one."""
        got = self._need_frames()
        if not isinstance(got, _Sample):
            return got
        stamps = got.stamps
        if len(stamps) < 3 or stamps[-1] - stamps[0] < 0.5:
            return "skip", f"too few frames to measure the rate ({len(stamps)})", ""
        measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        if got.nominal_fps is None:
            return "ok", f"{measured:.1f} fps measured (no configured rate to compare with)", ""
        ratio = measured / got.nominal_fps
        detail = f"{measured:.1f} fps measured, {got.nominal_fps:g} configured"
        if abs(ratio - 1.0) > FPS_TOLERANCE:
            return "warn", detail + f" ({ratio - 1:+.0%})", \
                "lower the camera's resolution or bit rate, check the network, or set the fps the camera delivers"
        return "ok", detail, ""

    def _measure(self, frames: list[NDArray[np.uint8]]) -> list[float]:
        if self._kind == "face":
            from edge.vision.faces import FaceAnalyzer

            analyzer = FaceAnalyzer(self._cfg.models.dir, runtime_options(self._cfg),
                                    score_threshold=self._cfg.face.score_threshold,
                                    max_side=self._cfg.face.detect_max_side)
            return [d.box.width for f in frames for d in analyzer.detect(f)]
        from edge.plates.reader import PlateReader

        reader = PlateReader(self._cfg.models.dir, runtime_options(self._cfg))
        return [r.box.height * PLATE_CHAR_RATIO for f in frames for r in reader.read(f)]

    def density(self) -> Outcome:
        """Face width or plate character height from live frames, against the aiming thresholds."""
        if self._kind is None:
            return "skip", "the camera is in no pipeline (face.cameras / plates.cameras)", ""
        got = self._need_frames()
        if not isinstance(got, _Sample):
            return got
        sizes = self._measure(got.frames)
        if not sizes and self._interactive:
            what = "stand at the gate line, facing the camera" if self._kind == "face" else \
                "park a car with its plate at the gate line"
            self._prompt(f"{self.cam.id}: {what} now ({_STAND_S:.0f} s)...")
            driver = create_driver(self.cam)
            driver.open()
            extra = _Sample()
            try:
                self._read(driver, extra, time.monotonic(), _STAND_S)
            finally:
                driver.close()
            sizes = self._measure(extra.frames)
        a = self._cfg.aim
        measure, fail, warn = ("face width", a.face_fail_px, a.face_warn_px) if self._kind == "face" else \
            ("plate character height", a.plate_char_fail_px, a.plate_char_warn_px)
        if not sizes:
            return "skip", f"no {'face' if self._kind == 'face' else 'plate'} seen in {len(got.frames)} frames", \
                "run `edgegw check --interactive` and stand at the gate line"
        median = float(sorted(sizes)[len(sizes) // 2])
        verdict = judge(median, fail, warn)
        detail = f"{measure} {median:.0f} px (median of {len(sizes)}; fail < {fail:g}, warn < {warn:g})"
        if verdict == "ok":
            return "ok", detail, ""
        hint = "zoom in or move the camera closer to the gate line (or raise its resolution)"
        return ("fail" if verdict == "fail" else "warn"), detail, hint
