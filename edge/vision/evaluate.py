"""Face verification accuracy: cosine scores of image pairs, TAR at a FAR target, equal error rate.

`score_pairs` reads a pairs CSV (two image paths and whether they show the same person), embeds
the largest face of each image once, and writes one JSON line per pair; the summary gives the
operating point an installer picks a match threshold from.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from edge.errors import ConfigError
from edge.vision.faces import FaceAnalyzer, ImageError, read_image

log = logging.getLogger(__name__)


_TRUE = {"1", "true", "yes", "same", "y"}


_FALSE = {"0", "false", "no", "different", "n"}


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """TAR at a FAR target: accept when score > threshold (None: no impostor bound exists)."""

    far_target: float
    tar: float
    far: float
    threshold: float | None


@dataclass(frozen=True, slots=True)
class EqualErrorRate:
    """The error rate where false accepts and false rejects balance, and the threshold there."""

    eer: float
    threshold: float | None


def tar_at_far(genuine: NDArray[Any], impostor: NDArray[Any], far_target: float) -> OperatingPoint:
    """Best TAR whose FAR ≤ far_target; a missing score (NaN) is never accepted."""
    gen = np.nan_to_num(np.asarray(genuine, np.float64), nan=-np.inf)
    imp = np.sort(np.nan_to_num(np.asarray(impostor, np.float64), nan=-np.inf))[::-1]
    allowed = math.floor(far_target * imp.size + 1e-9)
    if allowed >= imp.size or not np.isfinite(imp[allowed]):
        # Even accepting every scored pair stays within the FAR target.
        tar = float(np.mean(np.isfinite(gen))) if gen.size else math.nan
        far = float(np.mean(np.isfinite(imp))) if imp.size else 0.0
        return OperatingPoint(far_target, tar, far, None)
    threshold = float(imp[allowed])
    tar = float(np.mean(gen > threshold)) if gen.size else math.nan
    return OperatingPoint(far_target, tar, float(np.mean(imp > threshold)), threshold)


def equal_error_rate(genuine: NDArray[Any], impostor: NDArray[Any]) -> EqualErrorRate:
    """EER over thresholds at every observed score (accept when score ≥ threshold)."""
    gen = np.sort(np.nan_to_num(np.asarray(genuine, np.float64), nan=-np.inf))
    imp = np.sort(np.nan_to_num(np.asarray(impostor, np.float64), nan=-np.inf))
    if gen.size == 0 or imp.size == 0:
        return EqualErrorRate(math.nan, None)
    cands = np.unique(np.concatenate([gen, imp]))
    cands = np.append(cands[np.isfinite(cands)], np.inf)
    frr = np.searchsorted(gen, cands, side="left") / gen.size
    far = 1.0 - np.searchsorted(imp, cands, side="left") / imp.size
    i = int(np.argmin(np.abs(far - frr)))
    threshold = float(cands[i]) if np.isfinite(cands[i]) else None
    return EqualErrorRate(float((far[i] + frr[i]) / 2), threshold)


def _parse_same(value: str, line: int, pairs: Path) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{pairs}:{line}: column 'same' must be 1/0 (or true/false), got {value!r}")


def _rows(pairs: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with pairs.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"path1", "path2"} - set(reader.fieldnames or ())
            if missing:
                raise ConfigError(f"{pairs}: missing column(s) {', '.join(sorted(missing))}")
            for row in reader:
                yield reader.line_num, row
    except OSError as exc:
        raise ConfigError(f"cannot read {pairs}: {exc}") from exc


class _EmbeddingCache:
    """Largest-face embedding per image path, computed once."""

    def __init__(self, analyzer: FaceAnalyzer, root: Path) -> None:
        self.analyzer = analyzer
        self.root = root
        self.cache: dict[str, NDArray[np.float32] | None] = {}
        self.unreadable: set[str] = set()

    def get(self, rel: str) -> NDArray[np.float32] | None:
        if rel not in self.cache:
            try:
                image = read_image(self.root / rel)
            except ImageError as exc:
                log.warning("%s", exc)
                self.unreadable.add(rel)
                self.cache[rel] = None
            else:
                sample = self.analyzer.largest_face_embedding(image)
                self.cache[rel] = None if sample is None else sample.embedding
        return self.cache[rel]


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 6)


@dataclass(frozen=True, slots=True)
class ScoreSummary:
    """Counts and, when the CSV has a `same` column, the verification figures."""

    n_pairs: int
    n_scored: int
    n_images: int
    no_face: int
    unreadable: int
    genuine: int | None
    impostor: int | None
    operating_point: OperatingPoint | None
    eer: EqualErrorRate | None
    seconds: float

    def to_json(self) -> str:
        """The summary line: one JSON object with "summary": true."""
        data: dict[str, object] = {
            "summary": True,
            "n_pairs": self.n_pairs,
            "n_scored": self.n_scored,
            "n_images": self.n_images,
            "no_face": self.no_face,
            "unreadable": self.unreadable,
        }
        if self.operating_point is not None and self.eer is not None:
            op = self.operating_point
            data.update(
                genuine=self.genuine,
                impostor=self.impostor,
                far_target=op.far_target,
                tar_at_far=_num(op.tar),
                far=_num(op.far),
                threshold=_num(op.threshold),
                accept_rule="score > threshold",
                eer=_num(self.eer.eer),
                eer_threshold=_num(self.eer.threshold),
            )
        data["seconds"] = round(self.seconds, 3)
        return json.dumps(data)


def score_pairs(analyzer: FaceAnalyzer, pairs: Path, root: Path, far_target: float, out: TextIO) -> ScoreSummary:
    """Write one JSON line per pair to `out`, then the summary line; return the summary."""
    start = time.perf_counter()
    cache = _EmbeddingCache(analyzer, root)
    genuine: list[float] = []
    impostor: list[float] = []
    n_pairs = n_scored = 0
    has_same = False
    for line, row in _rows(pairs):
        p1, p2 = row["path1"], row["path2"]
        e1, e2 = cache.get(p1), cache.get(p2)
        score = None if e1 is None or e2 is None else round(float(np.dot(e1, e2)), 6)
        out.write(
            json.dumps(
                {"path1": p1, "path2": p2, "score": score, "detected1": e1 is not None, "detected2": e2 is not None}
            )
            + "\n"
        )
        n_pairs += 1
        n_scored += score is not None
        if row.get("same") not in (None, ""):
            has_same = True
            same = _parse_same(str(row["same"]), line, pairs)
            (genuine if same else impostor).append(math.nan if score is None else score)
    op = eer = None
    if has_same:
        op = tar_at_far(np.array(genuine), np.array(impostor), far_target)
        eer = equal_error_rate(np.array(genuine), np.array(impostor))
    summary = ScoreSummary(
        n_pairs=n_pairs,
        n_scored=n_scored,
        n_images=len(cache.cache),
        no_face=sum(1 for k, v in cache.cache.items() if v is None and k not in cache.unreadable),
        unreadable=len(cache.unreadable),
        genuine=len(genuine) if has_same else None,
        impostor=len(impostor) if has_same else None,
        operating_point=op,
        eer=eer,
        seconds=time.perf_counter() - start,
    )
    out.write(summary.to_json() + "\n")
    out.flush()
    return summary


