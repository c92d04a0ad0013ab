"""The per-position character vote shared by a frame's read variants and a track's reads."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol, TypeVar


class _Read(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def confidence(self) -> float: ...

    @property
    def char_confidences(self) -> tuple[float, ...]: ...


R = TypeVar("R", bound=_Read)


def vote_positions(reads: Sequence[R], *, by_weakest: bool = False) -> tuple[list[R], str, tuple[float, ...]]:
    """(the reads of the winning length, the winning text, each character's confidence).

    The length is chosen by summed confidence; then each position's character by summed character
    confidence over the reads of that length. A character's confidence is the winner's mean over those
    reads: one every read agrees on keeps its confidence, a split one is discounted.

    `by_weakest` also weights each read's votes by its weakest character's confidence: across the
    frames of a track, a frame unsure of one character (blurred, half out of view) is often wrong
    about its neighbours too, so two clear frames outvote three poor ones. The reported confidences
    stay unweighted means.
    """
    by_len: defaultdict[int, float] = defaultdict(float)
    for r in reads:
        by_len[len(r.text)] += r.confidence
    length = max(by_len, key=lambda n: by_len[n])
    same = [r for r in reads if len(r.text) == length]
    chars: list[str] = []
    confs: list[float] = []
    scale = [min(r.char_confidences, default=0.0) if by_weakest else 1.0 for r in same]
    for i in range(length):
        weight: defaultdict[str, float] = defaultdict(float)
        plain: defaultdict[str, float] = defaultdict(float)
        for r, k in zip(same, scale, strict=True):
            weight[r.text[i]] += r.char_confidences[i] * k
            plain[r.text[i]] += r.char_confidences[i]
        best = max(weight, key=lambda c: weight[c])
        chars.append(best)
        confs.append(plain[best] / len(same))
    return same, "".join(chars), tuple(confs)
