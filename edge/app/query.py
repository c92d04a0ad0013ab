"""The query daemon's composition: audit log, passage store, rate limiter, principals, front doors.

`serve()` runs the HTTP API and the MQTT 5 responder configured in `[query]` until stopped. The
face models for photo queries load on the first photo query, not at start-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from edge.app.config import Config
from edge.app.wiring import (
    data_key,
    mqtt_password,
    open_audit,
    open_case_keys,
    open_registry,
    open_store,
    origin_of,
    pseudonymiser,
    runtime_options,
    secret_path,
)
from edge.audit import AuditLog
from edge.errors import ConfigError
from edge.keys import load_secret
from edge.models.config import RuntimeOptions
from edge.passages.store import PassageStore
from edge.principals import PrincipalRegistry
from edge.query.mqtt_rr import MqttResponder
from edge.query.principals import Principals, load_principals
from edge.query.ratelimit import RateLimiter
from edge.query.service import PhotoEmbedder, PhotoError, QueryService
from edge.sdnotify import Notifier

if TYPE_CHECKING:  # FastAPI loads only where the HTTP door runs (the `query` extra)
    from edge.query.http import QueryHttpServer

log = logging.getLogger(__name__)


class LazyFaceEmbedder:
    """A PhotoEmbedder that loads the face models on the first photo query, not at start-up."""

    def __init__(self, models_dir: Path, options: RuntimeOptions, score_threshold: float,
                 max_megapixels: float = 40.0) -> None:
        self._args = (models_dir, options, score_threshold)
        self._max_megapixels = max_megapixels
        self._lock = threading.Lock()
        self._analyzer: object | None = None

    def __call__(self, photo: bytes) -> NDArray[np.float32] | None:
        from edge.vision.faces import FaceAnalyzer, ImageError, decode_image

        try:
            image = decode_image(photo, "the photo", self._max_megapixels)
        except ImageError as exc:
            raise PhotoError(str(exc)) from None
        with self._lock:
            if self._analyzer is None:
                models_dir, options, threshold = self._args
                self._analyzer = FaceAnalyzer(models_dir, options, score_threshold=threshold)
            analyzer = self._analyzer
        assert isinstance(analyzer, FaceAnalyzer)
        sample = analyzer.largest_face_embedding(image)
        return None if sample is None else sample.embedding


def door_key(cfg: Config) -> bytes:
    """The gateway's X25519 door key for MQTT requests (a 0600 key file or a systemd credential)."""
    return load_secret(secret_path(cfg, cfg.query.mqtt.door_key_file), purpose="MQTT query door", min_bytes=32)


def face_embedder(cfg: Config) -> PhotoEmbedder:
    """The photo embedder for this gateway's face models (loaded lazily)."""
    return LazyFaceEmbedder(cfg.models.dir, runtime_options(cfg), cfg.face.score_threshold,
                            cfg.query.max_photo_megapixels)


@dataclass
class QueryStack:
    """Everything a query front door needs, owned together; `close()` releases it."""

    audit: AuditLog
    store: PassageStore
    limiter: RateLimiter
    service: QueryService
    principals: Principals
    registry: PrincipalRegistry

    def close(self) -> None:
        """Close the databases (after auditing any refusals still only counted)."""
        self.service.flush_refusals()
        self.registry.close()
        self.limiter.close()
        self.store.close()
        self.audit.close()


def open_query_stack(cfg: Config, *, embedder: PhotoEmbedder | None = None,
                     clock: Callable[[], float] = time.time) -> QueryStack:
    """Open the audit log, passage store, rate limiter and principals, and build the service."""
    qcfg = cfg.query
    registry = open_registry(cfg)
    principals = load_principals(secret_path(cfg, qcfg.tokens_file), registry)
    registry.publish("query", principals.listing())  # names and roles only, for the console's admin
    audit = open_audit(cfg)
    try:
        store = open_store(cfg, data_key(cfg), audit, clock=clock)
    except BaseException:
        audit.close()
        raise
    limiter = RateLimiter(cfg.path(qcfg.rate_db), qcfg.rate_limit.max_queries, qcfg.rate_limit.per_s)
    service = QueryService(store, pseudonymiser(cfg), audit, qcfg, limiter,
                           embedder=embedder if embedder is not None else face_embedder(cfg), clock=clock,
                           case_keys=open_case_keys(cfg))
    return QueryStack(audit, store, limiter, service, principals, registry)


def serve(cfg: Config, stop: threading.Event,
          on_ready: Callable[[QueryHttpServer | None, MqttResponder | None], None] | None = None) -> None:
    """Run the query front doors configured in `query.http` / `query.mqtt` until `stop` is set."""
    try:
        from edge.query.http import QueryHttpServer
    except ImportError as exc:  # FastAPI and uvicorn come with the `query` extra
        raise ConfigError(f"the HTTP query door needs FastAPI and uvicorn (pip install 'edgegw[query]'): "
                          f"{exc}") from exc

    qcfg = cfg.query
    stack = open_query_stack(cfg)
    http = QueryHttpServer(stack.service, stack.principals, qcfg.http) if qcfg.http.enabled else None
    mqtt = (MqttResponder(stack.service, stack.principals, cfg.mqtt, qcfg.mqtt, origin_of(cfg),
                          door_key=door_key(cfg), nonce_db=cfg.path(qcfg.mqtt.nonce_db),
                          password=mqtt_password(cfg))
            if qcfg.mqtt.enabled else None)
    notifier = Notifier()
    try:
        if http is not None:
            http.start()
            print(f"query HTTP API on {qcfg.http.bind}:{http.port}", flush=True)
        if mqtt is not None:
            mqtt.start()
        notifier.ready("query service started")
        if on_ready is not None:
            on_ready(http, mqtt)
        while not stop.wait(5.0):
            doors = [d for d in (http, mqtt) if d is not None]
            if all(d.alive() for d in doors):
                notifier.watchdog()  # only while every door still serves: a dead one gets us restarted
            else:
                log.error("a query door stopped serving; withholding the watchdog ping so systemd restarts us")
            stack.service.flush_refusals()
    finally:
        notifier.stopping()
        if http is not None:
            http.stop()
        if mqtt is not None:
            mqtt.stop()
        stack.close()


def open_store_stack(cfg: Config) -> tuple[AuditLog, PassageStore]:
    """The audit log and the passage store, for purge and status (close both)."""
    audit = open_audit(cfg)
    try:
        return audit, open_store(cfg, data_key(cfg), audit)
    except BaseException:
        audit.close()
        raise
