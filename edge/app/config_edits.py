"""Edits of the config file the console makes: the gate line, a camera's zones and masks, the atomic write.

Edits go through tomlkit so comments and layout elsewhere in the file are kept; the caller validates
the new text with the root validator before `write_atomically` replaces the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomlkit


def write_atomically(path: Path, text: str) -> Path:
    """Replace `path` with `text` (fsynced, same mode), keeping the previous file as `<name>.prev`."""
    prev = path.with_name(path.name + ".prev")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    # The units run with UMask=0077: without this a 0640 file would come back 0600 and the group that
    # reads it (capture, for the console's drop-in) would lose it at the first edit.
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        with contextlib.suppress(FileNotFoundError):
            prev.unlink()
        os.link(path, prev)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return prev


def with_gate_line(text: str, camera_id: str, a: tuple[float, float], b: tuple[float, float]) -> str:
    """The config text with `[gate_lines.<camera>]` set to a→b; comments and layout elsewhere kept."""
    doc = tomlkit.parse(text)
    lines = doc.get("gate_lines")
    if lines is None:
        lines = tomlkit.table(is_super_table=True)
        doc["gate_lines"] = lines
    entry = tomlkit.table()

    entry["a"] = [_num(round(a[0], 1)), _num(round(a[1], 1))]
    entry["b"] = [_num(round(b[0], 1)), _num(round(b[1], 1))]
    lines[camera_id] = entry
    return tomlkit.dumps(doc)


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 4)


def with_shapes(text: str, camera_id: str, zones: Sequence[dict[str, Any]], masks: Sequence[dict[str, Any]]) -> str:
    """The config text with the camera's `[[zones.zone]]` and `[[masks]]` replaced by the given ones.

    Zones and masks of other cameras are kept as they are, in their order; the camera's new ones are
    appended. Each shape is a dict of config keys (its `polygon` in fractions of the image).
    """
    doc = tomlkit.parse(text)
    section = doc.get("zones")
    if section is None:
        section = tomlkit.table()
        doc["zones"] = section
    kept_zones = [z for z in section.get("zone", []) if z.get("camera") != camera_id]
    kept_masks = [m for m in doc.get("masks", []) if m.get("camera") != camera_id]

    def table(shape: dict[str, Any]) -> Any:
        t = tomlkit.table()
        for key, value in shape.items():
            t[key] = [[_num(x), _num(y)] for x, y in value] if key == "polygon" else value
        return t

    zone_aot = tomlkit.aot()
    for z in [*kept_zones, *(table({**z, "camera": camera_id}) for z in zones)]:
        zone_aot.append(z)
    mask_aot = tomlkit.aot()
    for m in [*kept_masks, *(table({**m, "camera": camera_id}) for m in masks)]:
        mask_aot.append(m)
    if len(zone_aot):
        section["zone"] = zone_aot
    elif "zone" in section:
        del section["zone"]
    if len(mask_aot):
        doc["masks"] = mask_aot
    elif "masks" in doc:
        del doc["masks"]
    if not len(section):
        del doc["zones"]
    return tomlkit.dumps(doc)


def with_camera_owned(text: str, camera_id: str, gate_line: tuple[tuple[float, float], tuple[float, float]] | None,
                      zones: Sequence[dict[str, Any]], masks: Sequence[dict[str, Any]]) -> str:
    """The drop-in text with `camera_id` in its `cameras`; the first time, its drawing so far (from the
    merged config: gate line, zones, masks) is copied in, so taking a camera over loses nothing."""
    doc = tomlkit.parse(text)
    owned = doc.get("cameras")
    if owned is not None and camera_id in owned:
        return text
    if owned is None:
        owned = tomlkit.array()
        # `cameras` first: a top-level key after a table would belong to that table.
        body = list(doc.body)
        doc.clear()
        doc["cameras"] = owned
        for key, item in body:
            if key is not None:
                doc[key.key] = item
    owned.append(camera_id)
    out = tomlkit.dumps(doc)
    if gate_line is not None:
        out = with_gate_line(out, camera_id, gate_line[0], gate_line[1])
    return with_shapes(out, camera_id, zones, masks)
