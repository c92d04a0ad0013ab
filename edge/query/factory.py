"""Building the query side from the gateway config: audit log, passage store, service, principals."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.audit import AuditLog
from edge.config import Config
from edge.models.runner import RuntimeOptions
from edge.passages.config import query_config
from edge.passages.factory import open_audit, open_store
from edge.passages.store import PassageStore
from edge.privacy import Pseudonymiser
from edge.query.principals import Principals, load_principals
from edge.query.ratelimit import RateLimiter
from edge.query.service import PhotoEmbedder, QueryService
from edge.secrets import data_key, district_key


class LazyFaceEmbedder:
    """A PhotoEmbedder that loads the face models on the first photo query, not at start-up."""

    def __init__(self, models_dir: Path, options: RuntimeOptions, score_threshold: float) -> None:
        self._args = (models_dir, options, score_threshold)
        self._lock = threading.Lock()
        self._analyzer: object | None = None

    def __call__(self, image: NDArray[np.uint8]) -> NDArray[np.float32] | None:
        from edge.vision.faces import FaceAnalyzer

        with self._lock:
            if self._analyzer is None:
                models_dir, options, threshold = self._args
                self._analyzer = FaceAnalyzer(models_dir, options, score_threshold=threshold)
            analyzer = self._analyzer
        assert isinstance(analyzer, FaceAnalyzer)
        sample = analyzer.largest_face_embedding(image)
        return None if sample is None else sample.embedding


def face_embedder(cfg: Config) -> PhotoEmbedder:
    """The photo embedder for this gateway's face models (loaded lazily)."""
    options = RuntimeOptions(providers=cfg.models.providers, intra_op_threads=cfg.models.intra_op_threads)
    return LazyFaceEmbedder(cfg.models.dir, options, cfg.face.score_threshold)


@dataclass
class QueryStack:
    """Everything a query front door needs, owned together; `close()` releases it."""

    audit: AuditLog
    store: PassageStore
    limiter: RateLimiter
    service: QueryService
    principals: Principals

    def close(self) -> None:
        """Close the databases."""
        self.limiter.close()
        self.store.close()
        self.audit.close()


def open_query_stack(cfg: Config, *, embedder: PhotoEmbedder | None = None,
                     clock: Callable[[], float] = time.time) -> QueryStack:
    """Open the audit log, passage store, rate limiter and principals, and build the service."""
    qcfg = query_config(cfg)
    principals = load_principals(_in_data_dir(cfg, qcfg.tokens_file))
    pseudonymiser = Pseudonymiser(district_key(cfg), cfg.privacy.epoch)
    audit = open_audit(cfg)
    try:
        store = open_store(cfg, data_key(cfg), audit, clock=clock)
    except BaseException:
        audit.close()
        raise
    limiter = RateLimiter(cfg.path(qcfg.rate_db), qcfg.rate_limit.max_queries, qcfg.rate_limit.per_s)
    service = QueryService(store, pseudonymiser, audit, qcfg, limiter,
                           embedder=embedder if embedder is not None else face_embedder(cfg), clock=clock)
    return QueryStack(audit, store, limiter, service, principals)


def _in_data_dir(cfg: Config, name: str) -> str:
    # As for the key files (edge.secrets): a systemd credential of that name wins; otherwise a
    # relative path is taken relative to the gateway's data directory.
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and "/" not in name and (Path(cred_dir) / name).exists():
        return name
    path = Path(name)
    return str(path if path.is_absolute() else cfg.gateway.data_dir / path)
