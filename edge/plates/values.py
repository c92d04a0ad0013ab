"""Values the plate path hands to other modules."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edge.plates.colour import PlateColour, PlateLayout
from edge.plates.grammar import PlateFormat
from edge.types import Box


@dataclass(frozen=True, slots=True)
class PlateRead:
    """One plate read from one image. The text is a raw identifier: it is kept out of repr."""

    text: str = field(repr=False)
    confidence: float
    char_confidences: tuple[float, ...] = field(repr=False)
    corners: NDArray[np.float32] = field(repr=False)  # 4x2, TL TR BR BL, frame pixels
    box: Box
    colour: PlateColour
    plate_type: PlateLayout
    valid: bool
    form: PlateFormat | None = None
    detector_score: float = 1.0
    colour_trusted: bool = False  # the colour is sure enough to decide the length (edge.plates.agreement)
    # Each character's share among what its grammar position allows (edge.plates.ctc.Decoded).
    char_shares: tuple[float, ...] = field(default=(), repr=False)

    @property
    def min_confidence(self) -> float:
        """The weakest character's confidence (0 when nothing was read)."""
        return min(self.char_confidences) if self.char_confidences else 0.0
