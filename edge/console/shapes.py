"""The zone and mask editor's form: rows of shapes in camera pixels → config dicts in fractions.

The browser sends one row per shape (kind, id, points as "x,y x,y ...", and for zones the rule and its
parameters). A row with neither id nor points is an unused blank and is dropped. Anything the form
itself gets wrong (a word where a number goes, a zone without a rule) is a `ShapeFormError` with a
message for the installer; whether the polygon is usable (3 points, on the frame, not crossing
itself) is the config validator's call, so the installer sees the same words `edgegw config check`
prints.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

ZONE_PARAMS = ("min_covered", "raise_after_s", "clear_after_s", "dwell_s")
_PAIR = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")


class ShapeFormError(ValueError):
    """The editor's form is malformed (the message is shown to the installer)."""


def parse_points(text: str, width: int, height: int) -> list[tuple[float, float]]:
    """ "x,y x,y ..." in camera pixels → fractions of the image (a point off the frame stays off it)."""
    out = []
    for item in re.split(r"[\s;]+", text.strip()):
        if not item:
            continue
        m = _PAIR.match(item)
        if m is None:
            raise ShapeFormError(f"{item!r} is not a point: write x,y in camera pixels, points separated by spaces")
        out.append((round(float(m.group(1)) / max(1, width - 1), 4), round(float(m.group(2)) / max(1, height - 1), 4)))
    return out


def format_points(polygon: Sequence[Sequence[float]], width: int, height: int) -> str:
    """Fractions → the "x,y x,y" camera pixels the form shows."""
    return " ".join(f"{round(x * (width - 1))},{round(y * (height - 1))}" for x, y in polygon)


def parse_rows(form: Mapping[str, Sequence[str]], width: int, height: int) -> tuple[list[dict[str, Any]],
                                                                                    list[dict[str, Any]]]:
    """The form's rows → (zones, masks) as config dicts, polygons in fractions."""
    kinds = list(form.get("kind", []))
    n = len(kinds)

    def col(name: str) -> list[str]:
        values = list(form.get(name, []))
        if len(values) != n:
            raise ShapeFormError(f"the form lost its {name} column: reload the editor")
        return values

    ids, points, rules, notes = col("id"), col("points"), col("rule"), col("note")
    params = {p: col(p) for p in ZONE_PARAMS}
    zones: list[dict[str, Any]] = []
    masks: list[dict[str, Any]] = []
    for i in range(n):
        shape_id, pts = ids[i].strip(), points[i].strip()
        if not shape_id and not pts:
            continue
        what = f"{kinds[i]} {shape_id or '#' + str(i + 1)}"
        if not shape_id:
            raise ShapeFormError(f"{what}: give it an id (letters, digits, _ . -)")
        try:
            polygon = parse_points(pts, width, height)
        except ShapeFormError as exc:
            raise ShapeFormError(f"{what}: {exc}") from None
        if kinds[i] == "mask":
            mask: dict[str, Any] = {"id": shape_id, "polygon": polygon}
            if notes[i].strip():
                mask["note"] = notes[i].strip()
            masks.append(mask)
        elif kinds[i] == "zone":
            if rules[i] not in ("obstruction", "dwell"):
                raise ShapeFormError(f"{what}: choose its rule (obstruction or dwell)")
            zone: dict[str, Any] = {"id": shape_id, "rule": rules[i], "polygon": polygon}
            for p in ZONE_PARAMS:
                value = params[p][i].strip()
                if value:
                    try:
                        zone[p] = float(value)
                    except ValueError:
                        raise ShapeFormError(f"{what}: {p} must be a number, not {value!r}") from None
            zones.append(zone)
        else:
            raise ShapeFormError(f"row {i + 1}: unknown kind {kinds[i]!r}")
    return zones, masks
