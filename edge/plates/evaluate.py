"""Plate reading accuracy: read labelled images (full scenes or tight crops) and score exact matches.

`read_items` writes one JSON line per image (the plate texts, on purpose: an installer's local
tool, nothing is logged or published) and returns the summary the benchmark and the CLI print.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from edge.errors import ConfigError
from edge.plates.reader import PlateReader
from edge.plates.values import PlateRead
from edge.vision.faces import ImageError, read_image

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Item:
    """One image to read, with its expected plate text when labelled."""

    path: str
    expected: str | None


@dataclass(frozen=True, slots=True)
class Summary:
    """Totals of one run."""

    images: int
    unreadable: int
    with_plate: int
    labelled: int
    exact: int
    exact_valid: int
    seconds: float

    def to_json(self) -> str:
        """The summary line."""
        acc = self.exact / self.labelled if self.labelled else None
        return json.dumps(
            {
                "summary": True,
                "images": self.images,
                "unreadable": self.unreadable,
                "with_plate": self.with_plate,
                "labelled": self.labelled,
                "exact": self.exact if self.labelled else None,
                "accuracy": round(acc, 4) if acc is not None else None,
                "exact_valid": self.exact_valid if self.labelled else None,
                "accuracy_valid": round(self.exact_valid / self.labelled, 4) if self.labelled else None,
                "seconds": round(self.seconds, 3),
            },
            ensure_ascii=False,
        )


def items_from_labels(labels: Path, kind: str | None = None) -> Iterator[Item]:
    """Rows of a CSV with a `path` column (and optionally `plate_text` and `kind`)."""
    try:
        with labels.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or ())
            if "path" not in fields:
                raise ConfigError(f"{labels}: missing column 'path'")
            if kind is not None and "kind" not in fields:
                raise ConfigError(f"{labels}: --kind needs a 'kind' column")
            for row in reader:
                if kind is not None and row.get("kind") != kind:
                    continue
                text = (row.get("plate_text") or "").strip()
                yield Item(row["path"], text or None)
    except OSError as exc:
        raise ConfigError(f"cannot read {labels}: {exc}") from exc


def plate_json(read: PlateRead) -> dict[str, Any]:
    """The JSON form of one read."""
    return {
        "text": read.text,
        "confidence": round(read.confidence, 4),
        "valid": read.valid,
        "corners": [[round(float(x), 1), round(float(y), 1)] for x, y in read.corners.tolist()],
        "colour": read.colour.value,
        "type": read.plate_type.value,
    }


def read_items(reader: PlateReader, items: Sequence[Item], root: Path | None, crop: bool, out: TextIO) -> Summary:
    """Read every item, write one JSON line each and the summary line; return the summary."""
    start = time.perf_counter()
    unreadable = with_plate = labelled = exact = exact_valid = 0
    for item in items:
        path = Path(item.path) if root is None else root / item.path
        record: dict[str, Any] = {"path": item.path}
        try:
            image = read_image(path)
        except ImageError as exc:
            log.warning("%s", exc)
            unreadable += 1
            record |= {"error": str(exc), "plates": []}
            reads: list[PlateRead] = []
        else:
            if crop:
                one = reader.read_crop(image)
                reads = [one] if one is not None else []
            else:
                reads = reader.read(image)
            record["plates"] = [plate_json(r) for r in reads]
        valid = [r for r in reads if r.valid]
        with_plate += bool(valid)
        if item.expected is not None:
            labelled += 1
            # Exact full-plate match (the CCPD metric) of the best read, and of the best read that
            # passed validation (what the gateway would publish).
            hit = bool(reads) and reads[0].text == item.expected
            exact += hit
            exact_valid += bool(valid) and valid[0].text == item.expected
            record["match"] = hit
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    summary = Summary(len(items), unreadable, with_plate, labelled, exact, exact_valid, time.perf_counter() - start)
    out.write(summary.to_json() + "\n")
    out.flush()
    return summary


