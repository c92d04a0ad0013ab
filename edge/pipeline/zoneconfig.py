"""Config of camera zones and their rules (obstruction, dwell), and of the static-foreground model.

Pure pydantic: importing it loads no OpenCV, so the root config can hold it for any daemon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.configbase import StrictModel
from edge.pipeline.polygon import polygon_problem

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class BackgroundConfig(StrictModel):
    """Settings of the per-camera static-foreground model; timings are seconds of camera time."""

    width: int = Field(default=160, ge=32, le=640)
    """Width of the grey image modelled (height follows the aspect ratio)."""
    short_tau_s: float = Field(default=4.0, gt=0.0)
    """Time constant of the short-term background: how long something must stand still to count."""
    long_tau_s: float = Field(default=900.0, gt=0.0)
    """Time constant of the long-term background (where it matches the scene)."""
    abs_threshold: float = Field(default=18.0, gt=0.0, le=255.0)
    """Grey-level difference that counts a pixel as different, at least..."""
    rel_threshold: float = Field(default=0.12, ge=0.0, le=1.0)
    """...or this fraction of the background's brightness, whichever is larger."""
    absorb_after_s: float = Field(default=4 * 3600.0, gt=0.0)
    """A pixel static this long becomes background (must exceed every zone's raise_after_s)."""
    sample_interval_s: float = Field(default=0.5, gt=0.0)
    """Model at most this often; obstruction is slow, so 2 frames a second are plenty."""
    reset_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    """A change over this fraction of the whole picture in one step (the camera knocked or moved,
    the day/night switch) restarts both backgrounds from the new picture instead of alarming."""


class ZoneConfig(StrictModel):
    """A polygon on one camera's image with one rule.

    Points are fractions of the image width and height (0..1), so a zone survives a change of stream
    resolution. `obstruction`: static foreground covering at least `min_covered` of the zone for
    `raise_after_s` raises; below `min_covered * clear_ratio` for `clear_after_s` clears. `dwell`: a
    tracked face or plate whose ground point stays in the zone for `dwell_s` raises; it clears when
    the track leaves or ends.
    """

    id: str = Field(pattern=_ID)
    camera: str = Field(pattern=_ID)
    polygon: tuple[tuple[float, float], ...] = Field(max_length=64)
    rule: Literal["obstruction", "dwell"]
    min_covered: float = Field(default=0.3, gt=0.0, le=1.0)
    raise_after_s: float = Field(default=300.0, gt=0.0)
    clear_after_s: float = Field(default=30.0, ge=0.0)
    clear_ratio: float = Field(default=0.5, gt=0.0, le=1.0)
    gap_s: float = Field(default=15.0, ge=0.0)
    """Dips below `min_covered` shorter than this (someone walking in front of the stall) do not
    restart the clock."""
    dwell_s: float = Field(default=60.0, gt=0.0)
    severity: Literal["info", "warning", "critical"] = "warning"

    @field_validator("polygon")
    @classmethod
    def _in_frame(cls, value: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        problem = polygon_problem(value, "zone")
        if problem:
            raise ValueError(problem)
        return value


class ZonesConfig(StrictModel):
    """The `[zones]` section: every zone (`[[zones.zone]]`) and the model settings they share."""

    background: BackgroundConfig = BackgroundConfig()
    zone: tuple[ZoneConfig, ...] = ()
    background_dir: Path = Path("capture")
    """Where each camera's long-term background is kept (`zones-<camera>.npy`), relative to the data
    directory: the capture daemon's own directory."""

    @model_validator(mode="after")
    def _unique(self) -> ZonesConfig:
        ids = [z.id for z in self.zone]
        if len(set(ids)) != len(ids):
            raise ValueError("zone ids must be unique")
        longest = max((z.raise_after_s for z in self.zone if z.rule == "obstruction"), default=0.0)
        if longest >= self.background.absorb_after_s:
            raise ValueError("background.absorb_after_s must exceed every obstruction zone's raise_after_s, "
                             "or the obstruction melts into the background before it alarms")
        return self

    def for_camera(self, camera: str) -> tuple[ZoneConfig, ...]:
        """The zones drawn on `camera`."""
        return tuple(z for z in self.zone if z.camera == camera)
