"""`edgegw plates read`: read the plates in images (or tight crops), one JSON line per image.

An installer's local tool: it prints plate texts on the console on purpose (nothing is logged or
published). With `--labels` and a `plate_text` column it also scores exact full-plate matches.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from edge.errors import ConfigError
from edge.models.config import RuntimeOptions
from edge.models.manifest import default_models_dir, load_manifest

log = logging.getLogger(__name__)


def cmd_read(args: argparse.Namespace) -> int:
    """Read plates in the given images or the images of a labels CSV."""
    from edge.plates.detector import DetectorParams  # OpenCV and ONNX Runtime: loaded for this command only
    from edge.plates.evaluate import Item, items_from_labels, read_items
    from edge.plates.reader import PlateReader, ReaderParams

    if args.root is not None and not args.root.is_dir():
        raise ConfigError(f"--root {args.root} is not a directory")
    items: list[Item] = [Item(p, None) for p in args.paths]
    if args.labels is not None:
        items.extend(items_from_labels(args.labels, args.kind))
    if not items:
        raise ConfigError("give image paths or --labels CSV")
    detector = DetectorParams() if args.long_side is None else DetectorParams(long_side=args.long_side or None)
    # --long-side sets the size detection (and so the plate proposals) runs at.
    params = ReaderParams(detector=detector) if args.long_side is None else ReaderParams(
        detector=detector, proposal_long_side=detector.long_side)
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
        default=None,
        help="propose plates on frames downscaled to this longer side (0: native size; default: 384, "
        "then 640 and 1280 while nothing is found)",
    )
    p.set_defaults(func=cmd_read)
