"""Chinese licence plates: detection (clp_det), rectification, PP-OCRv4 recognition, grammar, vote."""

from __future__ import annotations

from edge.plates.colour import PlateColour, PlateLayout
from edge.plates.grammar import PlateFormat, is_valid_plate, plate_format
from edge.plates.reader import PlateReader, ReaderParams
from edge.plates.values import PlateRead
from edge.plates.vote import PlateVote, VotedPlate

__all__ = [
    "PlateColour",
    "PlateFormat",
    "PlateLayout",
    "PlateRead",
    "PlateReader",
    "PlateVote",
    "ReaderParams",
    "VotedPlate",
    "is_valid_plate",
    "plate_format",
]
