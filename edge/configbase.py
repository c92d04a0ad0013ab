"""The base for every config model: strict (unknown keys are errors) and immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that forbids unknown keys and is frozen after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffConfig(StrictModel):
    """Exponential backoff with full jitter between `initial_s` and `max_s`."""

    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0
