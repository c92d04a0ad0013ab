"""`edgegw faces score`: cosine scores of the largest face in image pairs, plus TAR/FAR/EER.

Installers run it on their own photos to pick a match threshold; we run it to measure accuracy.
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


def cmd_score(args: argparse.Namespace) -> int:
    """Score every pair of the CSV; exit 0 even when some images have no face, 1 when none could be read."""
    # The vision stack (OpenCV, ONNX Runtime) loads only when a face command runs: building the
    # parser must stay cheap for the uplink daemon's process.
    from edge.vision.evaluate import score_pairs
    from edge.vision.faces import FaceAnalyzer

    if not args.root.is_dir():
        raise ConfigError(f"--root {args.root} is not a directory")
    manifest = load_manifest(args.manifest)
    analyzer = FaceAnalyzer(
        args.models_dir or default_models_dir(),
        RuntimeOptions(intra_op_threads=args.threads),
        manifest=manifest,
        score_threshold=args.score_threshold,
        max_side=args.max_side,
    )
    summary = score_pairs(analyzer, args.pairs, args.root, args.far, sys.stdout)
    if summary.n_images and summary.unreadable == summary.n_images:
        # Every path missed: almost always a wrong --root; say so rather than report TAR 0.
        print(f"edgegw: none of the {summary.n_images} images could be read under --root {args.root}; "
              "paths in the CSV are relative to --root", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    """Add the `faces` command group."""
    group = subparsers.add_parser("faces", help="face recognition tools")
    sub = group.add_subparsers(dest="faces_command", required=True)
    p = sub.add_parser("score", help="cosine score of the largest face in each image pair (JSON lines)")
    p.add_argument("--pairs", type=Path, required=True, help="CSV with columns path1,path2[,same]")
    p.add_argument("--root", type=Path, required=True, help="folder the CSV paths are relative to")
    p.add_argument("--models-dir", type=Path, default=None, help="models folder (default: repo models/)")
    p.add_argument("--manifest", type=Path, default=None, help="manifest file (default: models/manifest.toml)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--score-threshold", type=float, default=0.6, help="YuNet detection score threshold")
    p.add_argument("--max-side", type=int, default=1280, help="downscale images to this side for detection")
    p.add_argument("--far", type=float, default=0.001, help="FAR target for the TAR figure (0.001 = 0.1 %%)")
    p.set_defaults(func=cmd_score)
