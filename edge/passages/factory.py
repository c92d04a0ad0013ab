"""Building the passage observers, the store and the audit log from the gateway config."""

from __future__ import annotations

import time
from collections.abc import Callable

from edge.audit import AuditLog
from edge.config import Config
from edge.passages.config import audit_config, passage_config
from edge.passages.fusion import PassageFusion
from edge.passages.store import PassageStore


def open_audit(cfg: Config) -> AuditLog:
    """The gateway's audit log (created on first use)."""
    acfg = audit_config(cfg)
    path = cfg.path(acfg.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anchor = cfg.path(acfg.anchor_path) if acfg.anchor_path is not None else None
    return AuditLog(path, anchor_path=anchor)


def open_store(cfg: Config, data_key: bytes, audit: AuditLog, *,
               clock: Callable[[], float] = time.time) -> PassageStore:
    """The passage store at `passages.path`, its keys at `passages.keys_path`."""
    pcfg = passage_config(cfg)
    return PassageStore.open(cfg.path(pcfg.path), cfg.path(pcfg.keys_path), data_key, pcfg, audit, clock=clock)


def build_passage_observers(cfg: Config, data_key: bytes, audit: AuditLog, *,
                            clock: Callable[[], float] = time.time) -> list[PassageStore | PassageFusion]:
    """[store, fusion] for the Committer, in that order; [] when `passages.enabled` is false.

    The store comes first so a passage's members are on disk before the passage that links them.
    The caller owns them: `close()` each after the Committer's last `tick(float("inf"))`.
    """
    pcfg = passage_config(cfg)
    if not pcfg.enabled:
        return []
    return [open_store(cfg, data_key, audit, clock=clock), PassageFusion(pcfg, clock=clock)]


def audit_status(audit: AuditLog) -> dict[str, dict[str, object]]:
    """The status message fragment that lets the platform anchor the audit chain."""
    head = audit.head()
    return {"audit_head": {"seq": head.seq, "hash": head.hash}}
