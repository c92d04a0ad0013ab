"""`edgegw models warmup`: build every inference session once, before the services start.

On a Jetson with the TensorRT provider, the first session of a model builds a TensorRT engine for
the input shapes it sees, which takes minutes and would otherwise happen while the first passers-by
are queueing. Warm-up runs the face and plate paths at the configured cameras' frame sizes (and
every SFace batch size the face path uses), so the engines land in the engine cache
(`trt-cache/` beside the models) and each later start loads them in seconds. On CPU it is a quick
check that every model loads and runs, and it says which provider each model runs on.

Shapes the warm-up did not see (a plate recogniser line of another width) still build an engine
at their first use; the cache keeps those too.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import EdgeError
from edge.models.manifest import default_models_dir
from edge.models.runner import RuntimeOptions, chosen_providers

DEFAULT_SIZES = ((1280, 720), (640, 480))


@dataclass(frozen=True, slots=True)
class WarmupStep:
    """One warmed-up path at one input size, and how long its first runs took."""

    path: str
    size: tuple[int, int]
    seconds: float


def warm_up(models_dir: Path, options: RuntimeOptions, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
            *, faces: bool = True, plates: bool = True, detect_max_side: int = 640) -> list[WarmupStep]:
    """Load and run the face and plate models at each frame size; returns the time each step took."""
    steps: list[WarmupStep] = []
    if faces:
        from edge.vision.faces import DEFAULT_EMBED_BATCH, FaceAnalyzer

        t0 = time.perf_counter()
        analyzer = FaceAnalyzer(models_dir, options, max_side=detect_max_side)
        steps.append(WarmupStep("face: load", (0, 0), time.perf_counter() - t0))
        for w, h in sizes:
            t0 = time.perf_counter()
            analyzer.detect(np.zeros((h, w, 3), np.uint8))
            steps.append(WarmupStep("face: detect", (w, h), time.perf_counter() - t0))
        for n in range(1, DEFAULT_EMBED_BATCH + 1):
            t0 = time.perf_counter()
            analyzer.embed(np.zeros((n, 112, 112, 3), np.uint8))
            steps.append(WarmupStep(f"face: embed batch {n}", (112, 112), time.perf_counter() - t0))
    if plates:
        from edge.plates.reader import PlateReader

        t0 = time.perf_counter()
        reader = PlateReader(models_dir, options)
        steps.append(WarmupStep("plate: load", (0, 0), time.perf_counter() - t0))
        for w, h in sizes:
            t0 = time.perf_counter()
            reader.read(np.zeros((h, w, 3), np.uint8))
            steps.append(WarmupStep("plate: detect", (w, h), time.perf_counter() - t0))
        t0 = time.perf_counter()
        reader.read_crop(np.full((48, 160, 3), 128, np.uint8))
        steps.append(WarmupStep("plate: recognise", (160, 48), time.perf_counter() - t0))
    return steps


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
        from edge.config import load_config

        cfg = load_config(args.config)
        models_dir = args.models_dir or cfg.models.dir
        providers = tuple(p.strip() for p in args.providers.split(",")) if args.providers else cfg.models.providers
        threads = cfg.models.intra_op_threads
        max_side = cfg.face.detect_max_side
        sizes = sizes or _camera_sizes(cfg)
    options = RuntimeOptions(providers=providers, intra_op_threads=threads,
                             trt_cache_dir=args.trt_cache, trt_fp16=not args.no_fp16)
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
