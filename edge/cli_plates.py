"""`edgegw plates read`: read the plates in images (or tight crops), one JSON line per image.

An installer's local tool: it prints plate texts on the console on purpose (nothing is logged or
published). With `--labels` and a `plate_text` column it also scores exact full-plate matches.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from edge.errors import ConfigError
from edge.models.manifest import default_models_dir, load_manifest
from edge.models.runner import RuntimeOptions
from edge.plates.detector import DetectorParams
from edge.plates.reader import PlateReader, ReaderParams
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


def cmd_read(args: argparse.Namespace) -> int:
    """Read plates in the given images or the images of a labels CSV."""
    if args.root is not None and not args.root.is_dir():
        raise ConfigError(f"--root {args.root} is not a directory")
    items: list[Item] = [Item(p, None) for p in args.paths]
    if args.labels is not None:
        items.extend(items_from_labels(args.labels, args.kind))
    if not items:
        raise ConfigError("give image paths or --labels CSV")
    params = ReaderParams(detector=DetectorParams(long_side=args.long_side or None))
    reader = PlateReader(
        args.models_dir or default_models_dir(),
        RuntimeOptions(intra_op_threads=args.threads),
        params=params,
        manifest=load_manifest(args.manifest),
    )
    read_items(reader, items, args.root, args.crop, sys.stdout)
    return 0


def register(subparsers: Any) -> None:
    """Add the `plates` command group."""
    group = subparsers.add_parser("plates", help="licence-plate tools")
    sub = group.add_subparsers(dest="plates_command", required=True)
    p = sub.add_parser("read", help="read the plates in images (JSON lines, then a summary line)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files (relative to --root if given)")
    p.add_argument("--root", type=Path, default=None, help="folder the paths are relative to")
    p.add_argument("--labels", type=Path, default=None, help="CSV with a 'path' column (and 'plate_text')")
    p.add_argument("--kind", default=None, help="only rows of the labels CSV whose 'kind' column is this")
    p.add_argument("--crop", action="store_true", help="images are tight plate crops: skip detection")
    p.add_argument("--models-dir", type=Path, default=None, help="models folder (default: repo models/)")
    p.add_argument("--manifest", type=Path, default=None, help="manifest file (default: models/manifest.toml)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument(
        "--long-side",
        type=int,
        default=DetectorParams().long_side,
        help="detect on frames downscaled to this longer side (0: native size)",
    )
    p.set_defaults(func=cmd_read)
