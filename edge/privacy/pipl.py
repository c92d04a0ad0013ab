"""PIPL guard rails for resident face matching (Personal Information Protection Law of the PRC).

Face data is sensitive personal information (PIPL art. 28): processing it needs a specific purpose,
strict protection, a personal information protection impact assessment (art. 55–56) and notice signs
where images are captured (art. 26); residents must be able to refuse biometric entry, so every gate
that matches faces needs a non-biometric alternative (a card reader). These rules are checked when the
config is validated (a missing key exits 2 and is named), and ride in the retained status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import Field

from edge.configbase import StrictModel

_REF = r"^[\w./:# -]{1,128}$"


class PiplConfig(StrictModel):
    """The deployment's references the law asks for before faces are matched to residents."""

    impact_assessment_id: str | None = Field(default=None, pattern=_REF)
    """The personal information protection impact assessment covering this gateway (PIPL art. 55-56)."""
    signage_ref: str | None = Field(default=None, pattern=_REF)
    """The notice signs at the capture points (PIPL art. 26): a document or photo reference."""


def resident_matching_problems(*, enabled: bool, pipl: PiplConfig, face_gates: Mapping[str, str],
                               card_readers_by_gate: Mapping[str, Iterable[str]]) -> list[tuple[tuple[str, ...], str]]:
    """(key path, message) for what is missing before resident face matching may run; empty when it may.

    `face_gates` maps each face camera to its gate; `card_readers_by_gate` lists card readers per gate.
    """
    if not enabled:
        return []
    problems: list[tuple[tuple[str, ...], str]] = []
    if not pipl.impact_assessment_id:
        problems.append((("pipl", "impact_assessment_id"),
                         "required when face.resident_matching = true (the PIPL impact assessment covering "
                         "this gateway)"))
    if not pipl.signage_ref:
        problems.append((("pipl", "signage_ref"),
                         "required when face.resident_matching = true (the notice signs at the capture points)"))
    for camera, gate in sorted(face_gates.items()):
        if not list(card_readers_by_gate.get(gate, ())):
            problems.append((("face", "resident_matching"),
                             f"needs a non-biometric alternative at gate '{gate}' (camera {camera}): add a card "
                             "reader ([[serial]] with a card format) to that gate"))
    return problems


def status(*, enabled: bool, pipl: PiplConfig, card_readers_by_gate: Mapping[str, Iterable[str]]) -> dict[str, object]:
    """The part of the retained status that shows the guard rails in force."""
    return {"resident_matching": enabled, "impact_assessment_id": pipl.impact_assessment_id,
            "signage_ref": pipl.signage_ref,
            "card_alternatives": {g: sorted(r) for g, r in card_readers_by_gate.items()}}
