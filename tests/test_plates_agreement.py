"""Colour and length must agree before a plate is published: the gradient cue, the reader, the vote."""

from __future__ import annotations

import numpy as np
import pytest

from edge.plates.agreement import agrees, expected_length, forms_for
from edge.plates.colour import PlateColour, PlateLayout, new_energy_gradient
from edge.plates.grammar import PlateFormat
from edge.plates.values import PlateRead
from edge.plates.vote import PlateVote
from edge.types import Box


def _read(text: str, colour: PlateColour, *, trusted: bool, conf: float = 0.9) -> PlateRead:
    return PlateRead(text, conf, (conf,) * len(text), np.zeros((4, 2), np.float32), Box(0, 0, 10, 4), colour,
                     PlateLayout.SINGLE, True, None, colour_trusted=trusted)


def test_colour_decides_length_only_for_green_and_blue() -> None:
    assert expected_length(PlateColour.GREEN) == 8 and expected_length(PlateColour.BLUE) == 7
    assert expected_length(PlateColour.YELLOW) is None and forms_for(PlateColour.WHITE) == ()
    assert PlateFormat.NEW_ENERGY_SMALL in forms_for(PlateColour.GREEN)
    assert agrees("皖AD12345", PlateColour.GREEN) and not agrees("皖A12345", PlateColour.GREEN)
    assert not agrees("皖AD12345", PlateColour.BLUE) and agrees("皖A12345", PlateColour.YELLOW)


def test_new_energy_gradient_against_a_flat_teal_plate() -> None:
    rows = np.linspace(20, 200, 48, dtype=np.float32)[:, None]
    assert new_energy_gradient(np.repeat(rows, 160, axis=1).astype(np.uint8))
    assert not new_energy_gradient(np.full((48, 160), 150, np.uint8))
    assert not new_energy_gradient(np.full((4, 4), 150, np.uint8))  # too small to tell


def test_vote_drops_reads_whose_length_contradicts_a_trusted_green() -> None:
    vote = PlateVote()
    for _ in range(3):  # the frames that dropped a character outnumber the good one ...
        vote.add(_read("皖AF0556", PlateColour.GREEN, trusted=True, conf=0.95))
    vote.add(_read("皖AF05568", PlateColour.GREEN, trusted=True, conf=0.7))
    res = vote.result()
    assert res is not None and res.text == "皖AF05568" and res.colour is PlateColour.GREEN  # ... but cannot win


def test_vote_publishes_nothing_when_no_read_agrees_with_a_trusted_colour() -> None:
    vote = PlateVote()
    vote.add(_read("皖AF0556", PlateColour.GREEN, trusted=True))
    vote.add(_read("皖AF0557", PlateColour.GREEN, trusted=False))
    assert len(vote) == 2 and vote.result() is None


def test_an_unsure_colour_that_contradicts_the_length_is_not_reported() -> None:
    vote = PlateVote()
    vote.add(_read("皖ACD429", PlateColour.GREEN, trusted=False))  # a teal blue plate, no gradient
    res = vote.result()
    assert res is not None and res.text == "皖ACD429" and res.colour is PlateColour.UNKNOWN


@pytest.mark.models
def test_green_scene_never_yields_a_valid_seven_character_read() -> None:
    from tests.test_plates_models import _image, _kind, _reader

    try:
        r = _reader()
    except FileNotFoundError as exc:
        pytest.skip(f"plate models missing ({exc})")
    greens = [row for row in _kind("full_scene") if len(row["plate_text"]) == 8]
    assert greens
    for row in greens:
        for read in r.read(_image(row)):
            if read.valid:
                assert len(read.text) == 8, "a green plate must not be published with 7 characters"
            if read.colour_trusted and read.colour is PlateColour.GREEN:
                assert len(read.text) == 8 or not read.valid
