"""The gateway's retained status body: online, backlog, drops, disk, alarms, cameras and ports.

Built from the outbox (counters, storage, the status rows capture writes there) and the uplink's
own stats, so `edgegw status` at the gateway shows exactly what the platform receives. A full disk is
judged from the filesystem's free space as well as from the markers a failed commit leaves, because
those markers cannot be written to a full disk; the uplink remembers since when (`DiskWatch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.outbox import Outbox, StorageState
from edge.types import Origin
from edge.uplink.config import UplinkConfig
from edge.uplink.stats import UplinkStats

CAPTURE_STALE_S = 60.0
"""Capture writes its status every 5 s; older than this, it has stopped (or cannot write: a full disk)."""


@dataclass
class DiskWatch:
    """Remembers, in the uplink's memory, since when the disk has been full (the disk cannot hold that)."""

    since: float | None = None

    def see(self, storage: StorageState, now: float) -> float | None:
        """Since when the disk has been full, or None when it is not."""
        if not storage.disk_full:
            self.since = None
            return None
        if self.since is None:
            self.since = storage.full_since if storage.full_since is not None else now
        return min(self.since, storage.full_since) if storage.full_since is not None else self.since


def _alarms(outbox: Outbox, storage: StorageState, capture: dict[str, Any]) -> list[str]:
    counters = outbox.counters()
    passages = capture.get("passages", {})
    age = capture.get("age_s")
    return [name for name, on in (
        ("outbox_quota", outbox.quota_state().active),
        ("outbox_corrupt", counters.get("corrupt_replaced", 0) > 0),
        ("disk_full", storage.disk_full),
        ("capture_stale", isinstance(age, int | float) and age > CAPTURE_STALE_S),
        ("passage_store", bool(passages.get("backlog") or passages.get("lost"))),
    ) if on]


def alarm_signature(outbox: Outbox) -> tuple[object, ...]:
    """What the alarm list depends on: a change means the status goes out at once."""
    capture = outbox.get_status().get("capture", {})
    return (tuple(_alarms(outbox, outbox.storage(), capture)), outbox.counters().get("expired", 0))


def _storage(storage: StorageState, full_since: float | None, full_errors: int) -> dict[str, Any]:
    hours = None if storage.outage_s is None else round(storage.outage_s / 3600.0, 2)
    return {"used_bytes": storage.used_bytes, "quota_bytes": storage.quota_bytes,
            "disk_free_bytes": storage.disk_free_bytes, "full_since": full_since, "full_errors": full_errors,
            "state_bytes": storage.state_bytes, "wal_headroom_bytes": storage.wal_headroom_bytes,
            "reserve_bytes": storage.reserve_bytes,
            "rate_eps": None if storage.rate_eps is None else round(storage.rate_eps, 3),
            "bytes_per_event": None if storage.bytes_per_event is None else round(storage.bytes_per_event),
            "outage_hours": hours}


def status_body(outbox: Outbox, origin: Origin, cfg: UplinkConfig, stats: UplinkStats, *, online: bool,
                protocol: str, now: float, disk: DiskWatch | None = None) -> dict[str, Any]:
    """The retained status body."""
    counters = outbox.counters()
    storage = outbox.storage()
    components = outbox.get_status()
    capture = components.get("capture", {})
    alarms = _alarms(outbox, storage, capture)
    quota = outbox.quota_state()
    full_since = (disk or DiskWatch()).see(storage, now)
    by_kind = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("dropped_quota.")}
    expired_by_kind = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("expired.")}
    return {
        "online": online,
        "gateway": origin.gateway,
        "ts": round(now, 3),
        "boot": outbox.boot,
        "outbox_depth": outbox.depth(),
        "oldest_pending_age_s": outbox.oldest_age_s(),
        "delivered": counters.get("delivered", 0),
        "dropped": counters.get("dropped_quota", 0),
        "expired": counters.get("expired", 0),
        "drops": {"quota": counters.get("dropped_quota", 0), "quota_by_kind": by_kind,
                  "expired": counters.get("expired", 0), "expired_by_kind": expired_by_kind},
        "alarm": bool(alarms),
        "alarms": alarms,
        "disk_full": storage.disk_full,
        "storage": _storage(storage, full_since, counters.get("full_errors", 0)),
        "quota": {"alarm": quota.active, "since": quota.since, "dropped_since": quota.dropped_since},
        "passages": capture.get("passages", {}),
        "cameras": capture.get("cameras", {}),
        "ports": capture.get("ports", {}),
        "seq": {"last": outbox.last_seq(), "floor": outbox.seq_floor()},
        "uplink": {"protocol": protocol, "connects": stats.connects, "attempts": stats.attempts,
                   "last_error": stats.last_error, "ack_mode": cfg.ack_mode, "window": cfg.window,
                   "resent": counters.get("resent", 0), "resends_held": stats.resends_held,
                   "resend_hold_since": stats.resend_hold_since, "latency_ms": stats.latency_ms()},
        "components": components,
        # The signed audit head capture recorded: the platform stores it to detect a later rewrite.
        "audit_head": capture.get("audit_head"),
    }


def uplink_state(stats: UplinkStats, protocol: str) -> dict[str, Any]:
    """The uplink's own row in the outbox's status table (read by `edgegw status`)."""
    return {"connected": stats.connected, "last_error": stats.last_error, "protocol": protocol,
            "published": stats.published, "acked": stats.acked, "attempts": stats.attempts,
            "retry_in_s": stats.retry_in_s}
