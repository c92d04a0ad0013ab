"""The console's drop-in: `console.d/drawing.toml` beside the config holds what the console may change.

Least privilege for the installer's console: it never writes `gateway.toml` (broker, keys, privacy,
retention stay root's), only this file, which may hold nothing but drawings: gate lines, zones and
masks, for the cameras it names in `cameras`. For each of those cameras the drop-in's drawing
replaces the main file's whole drawing (so deleting a zone in the console deletes it); other cameras
keep the main file's. The shipped tmpfiles snippet makes `/etc/edgegw/console.d` 2750
edgegw-console:edgegw-drawing: the console writes it, capture (group edgegw-drawing) reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from edge.configbase import StrictModel
from edge.pipeline.config import GateLineConfig
from edge.pipeline.maskconfig import MaskConfig
from edge.pipeline.zoneconfig import ZoneConfig

DROPIN_DIR = "console.d"
DRAWING_FILE = "drawing.toml"


def drawing_path(config_path: Path) -> Path:
    """Where the drop-in of `config_path` lives (it may not exist)."""
    return config_path.parent / DROPIN_DIR / DRAWING_FILE


class _DrawnZones(StrictModel):
    zone: tuple[ZoneConfig, ...] = ()


class Drawing(StrictModel):
    """The drop-in's schema: only drawings, only of the cameras it names."""

    cameras: tuple[str, ...] = Field(default=())
    """The cameras whose gate line, zones and masks this file holds (replacing gateway.toml's)."""
    gate_lines: dict[str, GateLineConfig] = Field(default_factory=dict)
    zones: _DrawnZones = _DrawnZones()
    masks: tuple[MaskConfig, ...] = ()

    @model_validator(mode="after")
    def _only_named_cameras(self) -> Drawing:
        drawn = set(self.gate_lines) | {z.camera for z in self.zones.zone} | {m.camera for m in self.masks}
        stray = sorted(drawn - set(self.cameras))
        if stray:
            raise ValueError(f"drawings of cameras not listed in `cameras`: {', '.join(stray)} "
                             "(add them to cameras, or the main file's drawing would be kept beside them)")
        return self


def merge(raw: dict[str, Any], drawing: dict[str, Any]) -> dict[str, Any]:
    """The main config's raw dict with the drop-in's cameras' drawings in place of its own."""
    owned = set(drawing.get("cameras", ()))

    def table(d: Any) -> dict[str, Any]:
        return d if isinstance(d, dict) else {}

    def items(v: Any) -> list[Any]:
        return list(v) if isinstance(v, list) else []

    def kept(v: Any) -> list[Any]:  # what is not a table stays, for the validator to name
        return [x for x in items(v) if not isinstance(x, dict) or x.get("camera") not in owned]

    # Malformed shapes (a table where a list goes) are left to the validators, which name the key.
    if not (isinstance(raw.get("gate_lines", {}), dict) and isinstance(raw.get("zones", {}), dict)
            and isinstance(raw.get("masks", []), list)
            and isinstance(table(raw.get("zones")).get("zone", []), list)):
        return raw
    out = dict(raw)
    lines = {k: v for k, v in table(raw.get("gate_lines")).items() if k not in owned}
    lines.update(table(drawing.get("gate_lines")))
    out["gate_lines"] = lines
    zones = dict(table(raw.get("zones")))
    zones["zone"] = kept(zones.get("zone")) + items(table(drawing.get("zones")).get("zone"))
    out["zones"] = zones
    out["masks"] = kept(raw.get("masks")) + items(drawing.get("masks"))
    return out
