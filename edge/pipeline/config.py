"""Config of the capture pipeline: face and plate paths, the motion gate, gate lines, serial devices.

Pure pydantic models: importing this module loads no OpenCV, ONNX Runtime or pyserial, so the root
config (edge.app.config) can be parsed by any daemon, the uplink included.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from edge.configbase import StrictModel


class FaceConfig(StrictModel):
    """Face detection, tracking and matching."""

    enabled: bool = True
    detect_max_side: int = Field(default=640, ge=160, le=4096)
    score_threshold: float = Field(default=0.6, gt=0, lt=1)
    min_face_px: int = Field(default=20, ge=8)
    match_threshold: float = Field(default=0.363, gt=-1, lt=1)
    track_max_age_s: float = Field(default=0.8, gt=0)
    track_min_hits: int = Field(default=2, ge=1)
    embed_best: int = Field(default=3, ge=1, le=16)
    resident_matching: bool = False
    """Match faces against enrolled residents. Off by default: PIPL asks for an impact assessment, notice
    signs and a non-biometric alternative at the gate first (see [pipl]); off, every face is an unknown
    visitor under a random reference."""
    early_min_hits: int = Field(default=3, ge=0)
    """Decide a face track while it is open once it has this many hits, at least `embed_best` of
    them good enough to embed (0: only when the track ends)."""
    min_match_quality: float = Field(default=0.1, ge=0, le=1)
    """Best sample quality (edge.vision.face_quality) below which a track is not matched at all:
    "unmatched: quality" beats a wrong match. A track decides early only above it. Measured on the
    shared pairs at 20-40 px, dark and blurred (bench/bench_gate_faces.py): 0.1 kept 136 of 144
    genuine matches at 30 px with no false accept; 0.25 kept 63; faces at 20 px score 0 (too small)."""
    cameras: tuple[str, ...] = ()
    """Camera ids this path runs on; empty: every camera not given to the plate path."""


class PlateConfig(StrictModel):
    """Plate detection, reading and the per-track vote."""

    enabled: bool = True
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    track_max_age_s: float = Field(default=1.0, gt=0)
    track_min_hits: int = Field(default=1, ge=1)
    early_min_agreeing: int = Field(default=3, ge=0)
    """Emit a vehicle's passage while its track is open once this many valid reads agree exactly
    with the vote (0: only when the track ends)."""
    early_min_confidence: float = Field(default=0.85, ge=0, le=1)
    """... and the vote's confidence is at least this."""
    zoom: bool = True
    """On a frame where an open vehicle track got no plate detection, look again around its predicted
    plate on a crop where the plate is large enough to find (edge.pipeline.plates.TrackZoom)."""
    zoom_lookback_frames: int = Field(default=5, ge=0, le=30)
    """When a track starts, the same look at its plate in up to this many earlier frames (0: off);
    they are kept by reference, none older than `track_max_age_s`."""
    cameras: tuple[str, ...] = ()
    """Camera ids this path runs on (plate cameras usually differ from face cameras)."""


class MotionConfig(StrictModel):
    """Motion-gate settings; timings are config fields so tests can shrink them."""

    enabled: bool = True
    width: int = Field(default=64, ge=8, le=640)
    """Width in pixels of the grey image compared (height follows the aspect ratio)."""
    pixel_threshold: int = Field(default=15, ge=1, le=255)
    """Grey-level difference from the background that counts a pixel as changed."""
    min_changed_fraction: float = Field(default=0.004, gt=0.0, le=1.0)
    """Fraction of changed pixels above which the frame passes (0.004 of 64x36 is ~9 pixels)."""
    background_alpha: float = Field(default=0.05, gt=0.0, le=1.0)
    """Learning rate of the running background; slow light changes fade into it."""
    reset_fraction: float = Field(default=0.25, gt=0.0, le=1.0)
    """A change over this fraction of the picture (lights switched, camera moved, a new photo in a
    clip) replaces the background at once instead of letting the frames pass while it fades in."""
    force_interval_s: float | None = Field(default=1.0, gt=0.0)
    """Let a frame through at least this often even without motion (None: never force)."""


MIN_GATE_LINE_PX = 10


class GateLineConfig(StrictModel):
    """A gate line on the image, from `a` to `b` in pixels; see `GateLine` for which way is in."""

    a: tuple[float, float]
    b: tuple[float, float]

    @model_validator(mode="after")
    def _distinct(self) -> GateLineConfig:
        if self.a == self.b:
            raise ValueError("gate line end points must differ")
        if min(*self.a, *self.b) < 0:
            raise ValueError("gate line points are image pixels: x and y must not be negative")
        length = ((self.a[0] - self.b[0]) ** 2 + (self.a[1] - self.b[1]) ** 2) ** 0.5
        if length < MIN_GATE_LINE_PX:
            raise ValueError(f"gate line is {length:.0f} px long: draw it at least {MIN_GATE_LINE_PX} px long, "
                             "across the whole passage, or tracks will cross around it")
        return self


class DeviceConfig(StrictModel):
    """Windows and bounds for turning serial readings into Observations."""

    # One device_seen per device per window, emitted when the window (from first sighting) closes.
    window_s: float = Field(default=60.0, gt=0)
    # Period of the device_aggregate counts, aligned to multiples of the period in epoch time.
    aggregate_period_s: float = Field(default=300.0, gt=0)
    # Per sensor: devices tracked at once (more are counted as overflow, not emitted) ...
    max_devices: int = Field(default=4096, ge=1)
    # ... and distinct MACs counted per aggregate period (beyond it the counts are lower bounds).
    max_distinct: int = Field(default=65536, ge=1)
    # A reader that repeats the frame while a card stays in its field yields one swipe.
    card_debounce_s: float = Field(default=2.0, ge=0)
    max_cards: int = Field(default=1024, ge=1)


