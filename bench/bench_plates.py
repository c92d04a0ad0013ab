"""Plate race: edgegw's plate path against AgentCLPR as shipped, on the same 1280x720 frames.

Frames are the 36 CCPD scenes of ../shared/data/plates letterboxed into 1280x720 (the scene is
scaled to the frame height, so plates shrink to ~0.62 of their size). Both sides read every plate
in a frame, one ONNX Runtime intra-op thread each, alternating which side goes first on each
frame so drift on a shared machine cancels. Accuracy is the exact full-plate match of the best
read on those frames (ours: the best grammar-valid read; AgentCLPR: any of its texts).

AgentCLPR 1.1.0 and its runtime dependency AgentOCR 2.0.0 are pip-installed with --no-deps into
the bench's peer venv (bench/peers.py; never into .venv), with the few packages they import (shapely, pyclipper, six,
wget, pillow); its code is not changed. Its sessions are made single-threaded by giving new ORT
SessionOptions one intra-op thread, the only setting touched.

Run alone: `.venv/bin/python bench/bench_plates.py [--quick] [--no-install] [--no-peers]`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    FRAME_H,
    FRAME_W,
    MODELS_DIR,
    SHARED_DATA,
    SkipSection,
    csv_rows,
    env_summary,
    interleaved,
    letterbox,
    percentiles,
)
from edge.models.config import RuntimeOptions
from edge.plates.reader import PlateReader, ReaderParams

PLATES = SHARED_DATA / "plates"


@dataclass(frozen=True, slots=True)
class SceneFrame:
    """One CCPD scene as a 1280x720 frame, with its labelled plate text."""

    path: str
    text: str
    image: NDArray[np.uint8] = field(repr=False)


@dataclass
class Side:
    """Per-frame seconds and texts read by one side."""

    seconds: list[float] = field(default_factory=list)
    texts: list[list[str]] = field(default_factory=list)
    errors: int = 0


def scene_frames() -> list[SceneFrame]:
    """The labelled CCPD scenes, letterboxed into 1280x720."""
    labels = PLATES / "labels.csv"
    if not labels.is_file():
        raise SkipSection(f"plate data not found at {PLATES} (../shared/data beside the repo)")
    out = []
    for row in csv_rows(labels):
        if row.get("kind") != "full_scene":
            continue
        image = cv2.imread(str(SHARED_DATA / row["path"]), cv2.IMREAD_COLOR)
        if image is not None:
            out.append(SceneFrame(row["path"], row["plate_text"], letterbox(np.asarray(image, np.uint8))))
    if not out:
        raise SkipSection("no readable CCPD scenes")
    return out


def edge_frames(limit: int = 12) -> list[SceneFrame]:
    """1280x720 frames whose plate starts 3 px from the left edge (AgentCLPR crops 10 px around a
    plate without clipping, so such frames break it)."""
    out = []
    for row in csv_rows(PLATES / "labels.csv"):
        if row.get("kind") != "full_scene" or len(out) >= limit:
            continue
        image = cv2.imread(str(SHARED_DATA / row["path"]), cv2.IMREAD_COLOR)
        if image is None:
            continue
        scale = FRAME_H / image.shape[0]
        scaled = cv2.resize(image, (round(image.shape[1] * scale), FRAME_H), interpolation=cv2.INTER_AREA)
        x0 = max(0, round(float(row["x1"]) * scale) - 3)
        frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
        part = scaled[:, x0 : x0 + FRAME_W]
        frame[:, : part.shape[1]] = part
        out.append(SceneFrame(row["path"], row["plate_text"], frame))
    return out


def load_agentclpr(install: bool = True) -> tuple[Any, str | None]:
    """AgentCLPR's CLPSystem class from the bench's peer venv (bench/peers.py), installed once if allowed."""
    from bench import peers

    module, reason = peers.try_load("agentclpr", install_missing=install)
    if module is None:
        return None, reason
    _quiet_peer()
    return module.CLPSystem, None


def one_thread_sessions() -> None:
    """Make ONNX Runtime sessions created from now on single-threaded (for the peer's own code)."""
    import onnxruntime as ort

    base = ort.SessionOptions
    if getattr(base, "_edgegw_one_thread", False):
        return

    class OneThread(base):  # type: ignore[misc,valid-type]
        _edgegw_one_thread = True

        def __init__(self) -> None:
            super().__init__()
            self.intra_op_num_threads = 1
            self.inter_op_num_threads = 1

    ort.SessionOptions = OneThread


def _peer_texts(peer: Any, image: NDArray[np.uint8]) -> list[str]:
    with warnings.catch_warnings():
        # AgentOCR averages empty score lists on frames without text (numpy warns, result unused).
        warnings.simplefilter("ignore", RuntimeWarning)
        results = peer(image)
    return [str(r[1][0]) for r in results]


def _quiet_peer() -> None:
    # AgentOCR logs every call at DEBUG on the logger it names "root".
    for name in ("root", ""):
        logging.getLogger(name).setLevel(logging.WARNING)


def _accuracy(frames: list[SceneFrame], texts: list[list[str]], any_text: bool) -> int:
    hits = 0
    for f, t in zip(frames, texts, strict=True):
        hits += (f.text in t) if any_text else (bool(t) and t[0] == f.text)
    return hits


def run(
    *,
    quick: bool = False,
    peers: bool = True,
    install_peers: bool = True,
    models_dir: Path = MODELS_DIR,
    rounds: int = 3,
    race_only: bool = False,
) -> dict[str, Any]:
    """Race both plate readers on the same frames; report ms per frame, ratio and accuracy.

    `race_only` (the harness's repeated runs) skips the frame-edge section.
    """
    frames = scene_frames()
    if quick:
        frames, rounds = frames[:6], 1
    reader = PlateReader(models_dir, RuntimeOptions(intra_op_threads=1))
    peer: Any = None
    reason: str | None = "peers disabled (--no-peers)"
    if peers:
        cls, reason = load_agentclpr(install=install_peers)
        if cls is not None:
            one_thread_sessions()
            try:
                # AgentOCR prints its whole config to stdout while starting; keep the table clean.
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # its warm-up on blank images
                    peer = cls()
                _quiet_peer()
            except Exception as exc:  # the peer's constructor is not ours to trust
                peer, reason = None, f"agentclpr failed to start: {type(exc).__name__}: {exc}"
    # First calls allocate and pick kernels: warm both sides up outside the timed loop.
    reader.read(frames[0].image)
    if peer is not None:
        _peer_texts(peer, frames[0].image)
    ours, theirs = Side(), Side()
    for r in range(rounds):
        for i, ours_first in interleaved(len(frames)):
            frame = frames[i]
            order = ("ours", "peer") if ours_first == (r % 2 == 0) else ("peer", "ours")
            for who in order:
                if who == "peer" and peer is None:
                    continue
                side = ours if who == "ours" else theirs
                t0 = time.perf_counter()
                try:
                    if who == "ours":
                        texts = [p.text for p in reader.read(frame.image) if p.valid]
                    else:
                        texts = _peer_texts(peer, frame.image)
                except Exception:  # count a crash of either side as a failed frame
                    texts = []
                    side.errors += 1
                side.seconds.append(time.perf_counter() - t0)
                if r == 0:
                    side.texts.append(texts)
    edge = None if race_only else _edge_section(reader, peer, edge_frames(4 if quick else 12))
    result: dict[str, Any] = {
        "frames": len(frames),
        "rounds": rounds,
        "frame_size": "1280x720",
        "env": env_summary(),
        "ours": {
            "config": _describe(reader.params),
            "frame_ms": percentiles(ours.seconds),
            "exact": _accuracy(frames, ours.texts, any_text=False),
            "errors": ours.errors,
        },
    }
    result["edge_frames"] = edge
    if peer is None:
        result |= {"peer": None, "peer_reason": reason, "speedup": None}
        return result
    result["peer"] = {
        "name": "agentclpr 1.1.0 CLPSystem as shipped (agentocr 2.0.0), 1 ORT thread",
        "frame_ms": percentiles(theirs.seconds),
        "exact": _accuracy(frames, theirs.texts, any_text=True),
        "errors": theirs.errors,
    }
    o, t = np.median(ours.seconds), np.median(theirs.seconds)
    ratios = [p / q for p, q in zip(theirs.seconds, ours.seconds, strict=True) if q > 0]
    result["speedup"] = round(float(t / o), 2) if o > 0 else None
    result["median_frame_speedup"] = round(float(np.median(ratios)), 2) if ratios else None
    result["total_speedup"] = round(sum(theirs.seconds) / max(sum(ours.seconds), 1e-9), 2)
    return result


def _edge_section(reader: PlateReader, peer: Any, frames: list[SceneFrame]) -> dict[str, Any]:
    """Plates 3 px from the frame edge: exact reads and crashes of each side."""
    out: dict[str, Any] = {"frames": len(frames)}
    sides: list[tuple[str, Any]] = [("ours", None)] + ([("peer", peer)] if peer is not None else [])
    for who, impl in sides:
        exact = errors = 0
        for f in frames:
            try:
                texts = (
                    [p.text for p in reader.read(f.image) if p.valid] if impl is None else _peer_texts(impl, f.image)
                )
            except Exception:  # the point of this section: count crashes, do not stop
                errors += 1
                continue
            exact += (texts[:1] == [f.text]) if impl is None else (f.text in texts)
        out[who] = {"exact": exact, "errors": errors}
    return out


def _describe(p: ReaderParams) -> str:
    return (
        f"clp_det proposals at long side {p.proposal_long_side} (then {p.fallback_long_sides} "
        f"while none is found), refined at plate width {p.refine_width}, "
        f"PP-OCRv4 rec {p.line_width}x48 restricted + grammar-constrained CTC, 1 ORT thread"
    )


def table(result: dict[str, Any]) -> str:
    """The result as a small text table."""
    rows = [("side", "p50 ms/frame", "p90 ms/frame", "exact", "errors")]
    for key in ("ours", "peer"):
        side = result.get(key)
        if side:
            fm = side["frame_ms"]
            rows.append(
                (key, str(fm["p50_ms"]), str(fm["p90_ms"]), f"{side['exact']}/{result['frames']}", str(side["errors"]))
            )
    width = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) for r in rows]
    if result.get("speedup") is not None:
        lines.append(f"speedup (median frame time): {result['speedup']}x; total time: {result['total_speedup']}x")
    elif result.get("peer_reason"):
        lines.append(f"peer not run: {result['peer_reason']}")
    edge = result.get("edge_frames") or {}
    for key in ("ours", "peer"):
        if key in edge:
            lines.append(
                f"plate 3 px from the edge ({edge['frames']} frames), {key}: "
                f"exact {edge[key]['exact']}, crashes {edge[key]['errors']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    res = run(
        quick="--quick" in sys.argv, peers="--no-peers" not in sys.argv, install_peers="--no-install" not in sys.argv
    )
    print(table(res))
    print(json.dumps(res, indent=2, ensure_ascii=False))
