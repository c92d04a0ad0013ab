"""Building the gateway's shared objects from its config: the one place each is made.

Every daemon (capture, uplink, query, the residents and check commands) gets its outbox, origin,
keys, audit log and passage store from here, so each is built one way. This module imports only
light wings (no OpenCV, ONNX Runtime or pyserial): the uplink daemon uses it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edge.app.config import Config
from edge.audit import AuditLog
from edge.keys import check_private_file, load_secret, read_private_text, resolve_secret_path
from edge.models.config import RuntimeOptions
from edge.outbox import Outbox
from edge.passages.fusion import PassageFusion
from edge.passages.store import PassageStore
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Origin


def origin_of(cfg: Config) -> Origin:
    """The gateway's district/community/gateway ids."""
    return Origin(cfg.gateway.district, cfg.gateway.community, cfg.gateway.gateway)


def runtime_options(cfg: Config) -> RuntimeOptions:
    """ONNX Runtime options from config."""
    return cfg.models.runtime_options()


def make_outbox(cfg: Config) -> Outbox:
    """The outbox configured for this gateway."""
    return Outbox(cfg.path(cfg.outbox.path), topic_prefix=cfg.mqtt.topic_prefix, limits=cfg.outbox.limits())


# -- secrets: one resolver (edge.keys.resolve_secret_path), relative paths in the data directory ----
def secret_path(cfg: Config, name: str) -> Path:
    """Where a configured secret lives: a systemd credential of that name, else a path in data_dir."""
    return resolve_secret_path(name, cfg.gateway.data_dir)


def district_key(cfg: Config) -> bytes:
    """The district (pseudonym) key."""
    return load_secret(secret_path(cfg, cfg.privacy.district_key_file), purpose="district pseudonym key")


def data_key(cfg: Config) -> bytes:
    """The data-at-rest key (resident gallery, passage store); separate from the pseudonym key."""
    return load_secret(secret_path(cfg, cfg.storage.data_key_file), purpose="data-at-rest key")


def mqtt_password(cfg: Config) -> str | None:
    """The broker password, if one is configured; first refuses a TLS private key others can read.

    Every MQTT client of the gateway (uplink, query door) asks for its password before it connects,
    so this is where both broker secrets get the key-file permission check.
    """
    tls = cfg.mqtt.tls
    if tls is not None and tls.key_file is not None:
        check_private_file(cfg.path(tls.key_file), purpose="MQTT TLS private key")
    if not cfg.mqtt.password_file:
        return None
    # The same owner-only rule as key files: a world-readable password is refused, not used.
    return read_private_text(secret_path(cfg, cfg.mqtt.password_file), purpose="MQTT password").strip()


def privacy_boundary(cfg: Config) -> PrivacyBoundary:
    """The boundary that turns this gateway's observations into publishable events."""
    return PrivacyBoundary(pseudonymiser(cfg), origin_of(cfg))


def pseudonymiser(cfg: Config) -> Pseudonymiser:
    """Keyed pseudonyms under the district key and the configured epoch policy."""
    return Pseudonymiser(district_key(cfg), cfg.privacy.epoch)


# -- audit log and passage store --------------------------------------------------------------------
def open_audit(cfg: Config) -> AuditLog:
    """The gateway's audit log (created on first use)."""
    path = cfg.path(cfg.audit.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anchor = cfg.path(cfg.audit.anchor_path) if cfg.audit.anchor_path is not None else None
    return AuditLog(path, anchor_path=anchor)


def open_store(cfg: Config, key: bytes, audit: AuditLog, *,
               clock: Callable[[], float] = time.time) -> PassageStore:
    """The passage store at `passages.path`, its keys at `passages.keys_path`."""
    pcfg = cfg.passages
    return PassageStore.open(cfg.path(pcfg.path), cfg.path(pcfg.keys_path), key, pcfg, audit, clock=clock)


def build_passage_observers(cfg: Config, key: bytes, audit: AuditLog, *,
                            clock: Callable[[], float] = time.time) -> list[PassageStore | PassageFusion]:
    """[store, fusion] for the Committer, in that order; [] when `passages.enabled` is false.

    The store comes first so a passage's members are on disk before the passage that links them.
    The caller owns them: `close()` each after the Committer's last `tick(float("inf"))`.
    """
    if not cfg.passages.enabled:
        return []
    return [open_store(cfg, key, audit, clock=clock), PassageFusion(cfg.passages, clock=clock)]
