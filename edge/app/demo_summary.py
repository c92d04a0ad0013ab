"""What `edgegw demo` saw, in a few lines after the events: residents, visitors, cards, passages.

The counts come from the events as the demo's subscriber received them from the broker, so the
summary says what a platform would have seen, not what the gateway meant to send.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any


class Tally:
    """Counts received events by what they mean to a person watching the demo."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.residents: set[str] = set()
        self.resident_passages = 0
        self.unknown_faces = 0
        self.unmatched_quality = 0
        self.face_directions: Counter[str] = Counter()
        self.early = 0

    def add(self, event: Mapping[str, Any]) -> None:
        """Count one received event body."""
        kind = str(event.get("kind", "?"))
        attrs = event.get("attrs") or {}
        self.kinds[kind] += 1
        if attrs.get("decision") == "early":
            self.early += 1
        if kind != "face_passage":
            return
        self.face_directions[str(attrs.get("direction", "none"))] += 1
        if attrs.get("matched"):
            self.resident_passages += 1
            self.residents.add(str((event.get("subject") or {}).get("pseudonym", "?")))
        else:
            self.unknown_faces += 1
            self.unmatched_quality += attrs.get("unmatched") == "quality"

    def lines(self, *, face_cameras_without_line: int = 0) -> list[str]:
        """The summary, one `#` line each (the JSON event lines stay machine-readable)."""
        k = self.kinds
        out = [
            f"# summary: {sum(k.values())} event(s): {self.resident_passages} resident face passage(s) "
            f"({len(self.residents)} different resident(s)), {self.unknown_faces} unknown visitor(s)"
            + (f" ({self.unmatched_quality} too poor to match)" if self.unmatched_quality else "")
            + f", {k['card_swipe']} card swipe(s), {k['passage']} fused passage(s) (face + card)"
            + (f", {k['plate_passage']} plate passage(s)" if k["plate_passage"] else ""),
        ]
        if self.early:
            out.append(f"# {self.early} passage(s) were decided while the subject was still in view "
                       "(decision: early)")
        if self.face_directions and set(self.face_directions) == {"none"}:
            why = ("no gate line is configured for the face camera" if face_cameras_without_line
                   else "no face track crossed its camera's gate line")
            out.append(f"# faces have direction \"none\": {why} (a direction needs a [gate_lines.CAMERA] "
                       "line that the track crosses; the fused passages take theirs from the card reader)")
        return out
