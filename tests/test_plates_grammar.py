"""The Chinese plate grammar: valid and invalid plates of every form, normalisation."""

from __future__ import annotations

import pytest

from edge.plates.grammar import (
    PLATE_CHARS,
    PROVINCES,
    TEMPLATES,
    PlateFormat,
    is_new_energy,
    is_valid_plate,
    normalise_plate,
    plate_format,
)


@pytest.mark.parametrize(
    ("text", "form"),
    [
        ("皖A12345", PlateFormat.STANDARD),  # blue, digits only
        ("京PL3N67", PlateFormat.STANDARD),  # blue, letters and digits
        ("冀D5L690", PlateFormat.STANDARD),  # yellow (same form)
        ("粤BZZZZZ", PlateFormat.STANDARD),  # letters only after the issuing letter
        ("皖A1234学", PlateFormat.SPECIAL),  # coach
        ("沪A0001警", PlateFormat.SPECIAL),  # police
        ("鲁B1234挂", PlateFormat.SPECIAL),  # trailer
        ("沪A1234领", PlateFormat.SPECIAL),  # consulate
        ("粤Z1234港", PlateFormat.SPECIAL),  # Hong Kong
        ("粤Z1234澳", PlateFormat.SPECIAL),  # Macau
        ("皖AD19789", PlateFormat.NEW_ENERGY_SMALL),  # small new-energy: D then alnum then 4 digits
        ("皖KD01833", PlateFormat.NEW_ENERGY_SMALL),
        ("粤BF12345", PlateFormat.NEW_ENERGY_SMALL),  # F: non-pure-electric
        ("粤BDA1234", PlateFormat.NEW_ENERGY_SMALL),  # the 2019 extension: a letter 4th
        ("苏A12345D", PlateFormat.NEW_ENERGY_LARGE),  # large new-energy: 5 digits then D/F
        ("苏A12345F", PlateFormat.NEW_ENERGY_LARGE),
        ("使014578", PlateFormat.EMBASSY),
    ],
)
def test_valid_plates_have_their_form(text: str, form: PlateFormat) -> None:
    assert plate_format(text) is form
    assert is_valid_plate(text)
    assert is_new_energy(text) == (form in (PlateFormat.NEW_ENERGY_SMALL, PlateFormat.NEW_ENERGY_LARGE))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "皖A1234",  # too short
        "皖A123456",  # 8 characters but not new-energy (no D/F)
        "皖A1234567",  # too long
        "AA12345",  # no province
        "皖112345",  # second character must be a letter
        "皖I12345",  # I is never used
        "皖A1O345",  # O is never used
        "皖AI2345",
        "皖A12I45",
        "皖AD1I234",
        "京京12345",  # province in the middle
        "皖A1234京",  # province at the end
        "学A12345",  # suffix first
        "皖A123学4",  # suffix in the middle
        "皖AD1234A",  # small new-energy must end in 4 digits
        "皖AX12345",  # X is not a new-energy class
        "苏A1234DD",  # large new-energy needs 5 digits
        "苏AA2345D",
        "使01457",  # embassy needs 6 digits
        "使A14578",
        "皖a12345",  # lower case is not normalised by the validator
        "皖A 12345",
    ],
)
def test_impossible_reads_are_rejected(text: str) -> None:
    assert plate_format(text) is None
    assert not is_valid_plate(text)


def test_normalise_removes_separators_and_upper_cases() -> None:
    assert normalise_plate("皖a·12345") == "皖A12345"
    assert normalise_plate(" 粤B-DA1234 ") == "粤BDA1234"
    assert is_valid_plate(normalise_plate("皖a 12345"))


def test_character_classes() -> None:
    assert len(PROVINCES) == 31 and len(set(PROVINCES)) == 31
    assert "I" not in PLATE_CHARS and "O" not in PLATE_CHARS
    assert set("学警挂领使港澳") <= set(PLATE_CHARS)
    # Every template position allows only plate characters.
    for tpl in TEMPLATES:
        for allowed in tpl.positions:
            assert allowed and set(allowed) <= set(PLATE_CHARS)
