"""Colour and length must agree: a green plate has 8 characters, a blue one 7.

Green backgrounds are new-energy plates (GA 36-2018: 8 characters with the D/F rule); blue plates
are small cars with 7. A read whose length contradicts a trusted colour estimate is either a
misread (a character dropped or doubled) or a colour error, and neither may be published as it is:
the reader re-decodes such a plate constrained to the colour's forms, and the vote drops reads
whose length disagrees with the track's voted colour. Yellow, white and black plates are left
unconstrained (yellow-green large new-energy plates can read as yellow; 学 plates are yellow with 7).
"""

from __future__ import annotations

from edge.plates.colour import PlateColour
from edge.plates.grammar import PlateFormat

NEW_ENERGY_FORMS = (PlateFormat.NEW_ENERGY_SMALL, PlateFormat.NEW_ENERGY_LARGE)
SEVEN_FORMS = (PlateFormat.STANDARD, PlateFormat.SPECIAL, PlateFormat.EMBASSY)
_LENGTH = {PlateColour.GREEN: 8, PlateColour.BLUE: 7}
_FORMS = {PlateColour.GREEN: NEW_ENERGY_FORMS, PlateColour.BLUE: SEVEN_FORMS}


def expected_length(colour: PlateColour) -> int | None:
    """The only plate length a colour allows, or None when the colour does not decide it."""
    return _LENGTH.get(colour)


def forms_for(colour: PlateColour) -> tuple[PlateFormat, ...]:
    """The plate forms a colour allows (empty: the colour does not constrain the form)."""
    return _FORMS.get(colour, ())


def agrees(text: str, colour: PlateColour) -> bool:
    """Whether a read's length fits its plate colour (always true for unconstraining colours)."""
    n = expected_length(colour)
    return n is None or len(text) == n
