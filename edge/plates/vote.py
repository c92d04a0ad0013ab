"""Combining the reads of one plate across the frames of a track into one result."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from edge.plates.agreement import agrees
from edge.plates.colour import PlateColour, PlateLayout
from edge.plates.grammar import is_valid_plate, plate_format
from edge.plates.positions import vote_positions
from edge.plates.values import PlateRead


@dataclass(frozen=True, slots=True)
class VotedPlate:
    """The outcome of a vote: text (raw, kept out of repr), its share of the vote, and support."""

    text: str = field(repr=False)
    confidence: float
    char_confidences: tuple[float, ...] = field(repr=False)
    support: int  # reads that agree with the voted text exactly
    reads: int  # valid reads that took part
    colour: PlateColour
    plate_type: PlateLayout


class PlateVote:
    """Accumulates the reads of one track and votes per character position.

    Only grammar-valid reads vote. When some reads' colour is sure enough to decide the length
    (`PlateRead.colour_trusted`), the track's colour is voted among those and reads of another
    length are dropped. Reads of the most supported length vote position by position,
    each character weighted by its confidence; if the per-position winner is not a valid plate
    (positions voted from different forms), the best-supported whole text wins instead.
    """

    def __init__(self, min_confidence: float = 0.0, *, by_weakest: bool = True) -> None:
        self._min_confidence = min_confidence
        self._by_weakest = by_weakest  # see edge.plates.positions.vote_positions
        self._reads: list[PlateRead] = []

    def add(self, read: PlateRead) -> None:
        """Add one read (invalid or too weak reads are ignored)."""
        if read.valid and read.confidence >= self._min_confidence and is_valid_plate(read.text):
            self._reads.append(read)

    def __len__(self) -> int:
        return len(self._reads)

    def result(self) -> VotedPlate | None:
        """The voted plate, or None when no valid read was added."""
        reads = self._reads
        if not reads:
            return None
        trusted: defaultdict[PlateColour, float] = defaultdict(float)
        for r in reads:
            if r.colour_trusted:
                trusted[r.colour] += r.confidence
        decided = max(trusted, key=lambda c: trusted[c]) if trusted else None
        if decided is not None:
            # Length and colour must agree before anything is published: a track whose plate is
            # surely green keeps only its 8-character reads (surely blue: 7).
            reads = [r for r in reads if agrees(r.text, decided)]
            if not reads:
                return None
        same, text, confs = vote_positions(reads, by_weakest=self._by_weakest)
        if plate_format(text) is None:
            whole: defaultdict[str, float] = defaultdict(float)
            for r in same:
                whole[r.text] += r.confidence
            text = max(whole, key=lambda t: whole[t])
            confs = tuple(sum(r.char_confidences[i] for r in same if r.text == text) / len(same)
                          for i in range(len(text)))
        support = sum(1 for r in reads if r.text == text)
        colour = decided or Counter(r.colour for r in reads).most_common(1)[0][0]
        if not agrees(text, colour):
            colour = PlateColour.UNKNOWN  # an unsure colour that contradicts the length is not reported
        layout = Counter(r.plate_type for r in reads).most_common(1)[0][0]
        return VotedPlate(
            text=text,
            confidence=sum(confs) / len(confs),
            char_confidences=tuple(confs),
            support=support,
            reads=len(reads),
            colour=colour,
            plate_type=layout,
        )
