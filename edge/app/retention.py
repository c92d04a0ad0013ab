"""Retention beyond the passage store: the audit chain's start, per-case audit keys, epoch keys."""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge.app.config import Config
from edge.app.wiring import open_case_keys, open_keyring
from edge.audit import AuditLog


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention run removed."""

    audit_records_pruned: int
    case_keys_shredded: int
    epoch_keys_destroyed: int


def apply_retention(cfg: Config, audit: AuditLog, *, now: float | None = None, actor: str = "system:retention"
                    ) -> RetentionReport:
    """Prune audit records past `audit.retention_days`, shred case keys past `audit.case_key_days`, and
    destroy epoch keys past their window (a development config without a keyring skips the last)."""
    now = time.time() if now is None else now
    pruned = audit.prune(int((now - cfg.audit.retention_days * 86400.0) * 1000), actor=actor)
    with open_case_keys(cfg) as keys:
        shredded = keys.purge(now)
    destroyed = 0
    if cfg.privacy.district_key_file is None:
        with open_keyring(cfg) as ring:
            destroyed = len(ring.purge(now))
    if shredded or destroyed:
        audit.append(actor, "retention", {"case_keys_shredded": len(shredded), "epoch_keys_destroyed": destroyed})
    return RetentionReport(pruned, len(shredded), destroyed)
