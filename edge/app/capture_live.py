"""Capture's telemetry and live view: metrics, the aiming window, and preview frames on request.

Wired into the capture daemon by three small hooks: each camera worker calls `frame_hook` after a
frame, the serial hub calls `on_reading` after a decoded reading, and ONNX Runtime calls report
their times. Everything here is off the event path: a failure is logged and the frame goes on.
A preview JPEG is drawn and encoded only while the console holds a fresh request for that camera
(edge.preview); with nobody watching, the cost is one stat() per camera every half second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.aim import AimConfig, AimWindow
from edge.models.runner import set_timing_observer
from edge.pipeline.tracker import GateLine
from edge.pipeline.worker import FrameHook
from edge.pipeline.zoneconfig import ZoneConfig
from edge.preview import LiveChannel, PreviewRequest, mask
from edge.telemetry.metrics import Family, Telemetry, counter, gauge
from edge.types import Box, Frame, Reading

log = logging.getLogger(__name__)

_BOX_HOLD_S = 1.0  # the motion gate skips still frames: keep drawing the last boxes that long
_FACE_COLOUR = (80, 220, 80)
_PLATE_COLOUR = (255, 160, 40)
_LINE_COLOUR = (0, 220, 255)
_ZONE_COLOURS = {"obstruction": (60, 60, 255), "dwell": (255, 80, 200)}


class BoxedPath(Protocol):
    """A camera path that exposes what it detected on the last frame and its gate line."""

    @property
    def last_boxes(self) -> list[Box]:
        """What was detected on the last frame."""
        ...

    @property
    def gate_line(self) -> GateLine | None:
        """The gate line."""
        ...


@dataclass
class _CameraLive:
    kind: str  # "face" or "plate"
    path: BoxedPath
    aim: AimWindow
    boxes: list[Box] = field(default_factory=list)
    boxes_ts: float = 0.0
    last_preview: float = 0.0
    previews: int = 0
    previewing: bool = False
    zones: list[tuple[str, str, tuple[tuple[float, float], ...]]] = field(default_factory=list)


def render_preview(image: NDArray[np.uint8], req: PreviewRequest, kind: str, boxes: Iterable[Box],
                   line: GateLine | None, *,
                   zones: Iterable[tuple[str, str, tuple[tuple[float, float], ...]]] = ()) -> bytes:
    """Scale to at most `req.max_height` lines, draw the overlay if asked, encode as JPEG."""
    h, w = image.shape[:2]
    scale = min(1.0, req.max_height / h)
    out = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else \
        image.copy()
    if req.overlay:
        colour = _FACE_COLOUR if kind == "face" else _PLATE_COLOUR
        for b in boxes:
            p1 = (round(b.x1 * scale), round(b.y1 * scale))
            p2 = (round(b.x2 * scale), round(b.y2 * scale))
            cv2.rectangle(out, p1, p2, colour, 2)
            # The label is the box's size in the camera's own pixels: what the aiming gauge judges.
            label = f"{b.width:.0f}px" if kind == "face" else f"{b.height * 90 / 140:.0f}px char"
            cv2.putText(out, label, (p1[0], max(12, p1[1] - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                        cv2.LINE_AA)
        if line is not None:
            a = (round(line.a[0] * scale), round(line.a[1] * scale))
            b2 = (round(line.b[0] * scale), round(line.b[1] * scale))
            cv2.line(out, a, b2, _LINE_COLOUR, 2, cv2.LINE_AA)
            cv2.putText(out, "gate", a, cv2.FONT_HERSHEY_SIMPLEX, 0.5, _LINE_COLOUR, 1, cv2.LINE_AA)
        oh, ow = out.shape[:2]
        for zone_id, rule, polygon in zones:  # fractions of the image: drawn on the scaled picture as is
            pts = np.array([[round(x * (ow - 1)), round(y * (oh - 1))] for x, y in polygon], np.int32)
            zc = _ZONE_COLOURS.get(rule, _LINE_COLOUR)
            cv2.polylines(out, [pts], True, zc, 2, cv2.LINE_AA)
            cv2.putText(out, f"{zone_id} ({rule})", (int(pts[0][0]) + 4, int(pts[0][1]) + 14),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, zc, 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 75])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())


class CaptureLive:
    """The capture daemon's telemetry registry, aim windows and preview producer."""

    def __init__(self, live_dir: Any, aim: AimConfig) -> None:
        self.telemetry = Telemetry("capture")
        self.live = LiveChannel(live_dir)
        self._aim_cfg = aim
        self._cams: dict[str, _CameraLive] = {}
        self._lock = threading.Lock()
        self.last_frame_at: dict[str, float] = {}
        self._pending_zones: dict[str, list[tuple[str, str, tuple[tuple[float, float], ...]]]] = {}
        hist = self.telemetry.inference_seconds
        set_timing_observer(lambda model, s: hist.labels(model.split(".")[0]).observe(s))

    def close(self) -> None:
        """Stop observing model calls."""
        set_timing_observer(None)

    def frame_hook(self, source_id: str, kind: str, path: BoxedPath) -> FrameHook:
        """The hook a camera worker calls after each frame."""
        cam = _CameraLive(kind, path, AimWindow(self._aim_cfg), zones=self._pending_zones.pop(source_id, []))
        self._cams[source_id] = cam
        frame_seconds = self.telemetry.frame_seconds.labels(source_id)
        width_hist = self.telemetry.face_width_px.labels(source_id)
        char_hist = self.telemetry.plate_char_px.labels(source_id)

        def on_frame(frame: Frame, detected: bool, spent: float) -> None:
            now = time.time()
            self.last_frame_at[source_id] = now
            frame_seconds.observe(spent)
            if detected:
                boxes = list(cam.path.last_boxes)
                if boxes:
                    cam.boxes, cam.boxes_ts = boxes, now
                for b in boxes:
                    if kind == "face":
                        cam.aim.add_face(b.width, now)
                        width_hist.observe(b.width)
                    else:
                        cam.aim.add_plate(b.height, now)
                        char_hist.observe(b.height * 90 / 140)
            req = self.live.wanted(source_id, now)
            if req is None:
                if cam.previewing:  # the lease lapsed: no frame of it stays on disk
                    cam.previewing = False
                    self.live.discard(source_id)
                return
            if now - cam.last_preview < 1.0 / req.fps:
                return
            cam.previewing = True
            cam.last_preview = now
            boxes = cam.boxes if now - cam.boxes_ts <= _BOX_HOLD_S else []
            h, w = frame.shape
            self.live.publish(source_id, render_preview(frame.image, req, kind, boxes, cam.path.gate_line,
                                                        zones=cam.zones), width=w, height=h)
            cam.previews += 1

        return on_frame

    def on_reading(self, reading: Reading) -> None:
        """A decoded serial reading: recorded masked, only while the console runs a swipe test."""
        if reading.identifier.kind.value == "card" and self.live.swipes_wanted():
            self.live.record_swipe(reading.source_id, mask(reading.identifier.value), reading.ts)

    def aim_status(self) -> dict[str, dict[str, object]]:
        """Per camera: the last minute's face widths or plate character heights and the verdict."""
        now = time.time()
        out: dict[str, dict[str, object]] = {}
        for cam_id, cam in self._cams.items():
            s = cam.aim.summary(now)
            key = "face_width" if cam.kind == "face" else "plate_char_height"
            out[cam_id] = {"measure": key, **s[key].as_dict()}
        return out

    def set_zones(self, cam_id: str, zones: Iterable[ZoneConfig]) -> None:
        """The zones the overlay draws for a camera (given before or after its frame hook is made)."""
        drawn: list[tuple[str, str, tuple[tuple[float, float], ...]]] = [(z.id, str(z.rule), z.polygon)
                                                                           for z in zones]
        cam = self._cams.get(cam_id)
        if cam is None:
            self._pending_zones[cam_id] = drawn
        else:
            cam.zones = drawn  # swapped whole: the worker's hook reads one list or the other

    def set_gate_lines(self, lines: dict[str, GateLine | None]) -> list[str]:
        """Give each camera path its (new) gate line; returns the camera ids that changed."""
        changed = []
        for cam_id, cam in self._cams.items():
            new = lines.get(cam_id)
            if new != cam.path.gate_line:
                setter: Callable[[GateLine | None], None] | None = getattr(cam.path, "set_gate_line", None)
                if setter is not None:
                    setter(new)
                    changed.append(cam_id)
        return changed


def capture_families(status: Callable[[], dict[str, Any]], committed_by_kind: Callable[[], dict[str, int]],
                     last_frame_at: dict[str, float]) -> Callable[[], list[Family]]:
    """Scrape-time families from the capture daemon's own status (no identifiers in any label)."""

    def families() -> list[Family]:
        body = status()
        cams: dict[str, dict[str, Any]] = body.get("cameras", {})
        ports: dict[str, Any] = {k: v for k, v in body.get("ports", {}).items() if not k.startswith("_")}
        rejected = [((pid, str(reason)), float(n)) for pid, st in ports.items()
                    for reason, n in (st.get("frames_rejected") or {}).items()]
        return [
            gauge("edgegw_camera_fps", "Frames per second read from the camera", ("camera",),
                  [((c,), st.get("fps") or 0.0) for c, st in cams.items()]),
            gauge("edgegw_camera_up", "1 while the camera is connected", ("camera",),
                  [((c,), 1.0 if st.get("state") == "connected" else 0.0) for c, st in cams.items()]),
            gauge("edgegw_camera_last_frame_timestamp_seconds", "Unix time of the camera's last processed frame",
                  ("camera",), [((c,), ts) for c, ts in last_frame_at.items()]),
            counter("edgegw_camera_frames_total", "Frames read from the camera", ("camera",),
                    [((c,), st.get("frames_read") or 0) for c, st in cams.items()]),
            counter("edgegw_camera_frames_dropped_total", "Frames dropped between camera and pipeline",
                    ("camera",), [((c,), st.get("frames_dropped") or 0) for c, st in cams.items()]),
            counter("edgegw_camera_reconnects_total", "Camera reconnections", ("camera",),
                    [((c,), st.get("reconnects") or 0) for c, st in cams.items()]),
            gauge("edgegw_serial_connected", "1 while the serial port is open", ("port",),
                  [((p,), 1.0 if st.get("connected") else 0.0) for p, st in ports.items()]),
            counter("edgegw_serial_frames_accepted_total", "Serial frames decoded", ("port",),
                    [((p,), st.get("frames_ok") or 0) for p, st in ports.items()]),
            counter("edgegw_serial_frames_rejected_total", "Serial frames rejected, by reason", ("port", "reason"),
                    rejected),
            counter("edgegw_events_committed_total", "Events committed to the outbox, by kind", ("kind",),
                    [((k,), n) for k, n in committed_by_kind().items()]),
            counter("edgegw_events_refused_total", "Observations refused at the privacy boundary", (),
                    [((), body.get("refused_at_boundary") or 0)]),
        ]

    return families
