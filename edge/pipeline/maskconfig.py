"""Config of detection masks: polygons on a camera's image that nothing in capture ever looks at.

A mask (`[[masks]]`) is blacked out of every frame before the motion gate, the detectors, the zones
and the console's preview see it: a neighbour's window, a public pavement outside the community, a
tree that waves all night. Pure pydantic, like the zones' config.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from edge.configbase import StrictModel
from edge.pipeline.polygon import polygon_problem

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class MaskConfig(StrictModel):
    """One masked polygon; points are fractions of the image width and height (0..1)."""

    id: str = Field(pattern=_ID)
    camera: str = Field(pattern=_ID)
    polygon: tuple[tuple[float, float], ...] = Field(max_length=64)
    note: str = Field(default="", max_length=200)
    """Why it is masked (privacy of a neighbour's window, a waving tree): for the next installer."""

    @field_validator("polygon")
    @classmethod
    def _usable(cls, value: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        problem = polygon_problem(value, "mask")
        if problem:
            raise ValueError(problem)
        return value
