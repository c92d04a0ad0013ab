"""The gateway's retained status body: online, backlog, drops, disk, alarms, cameras and ports.

Built from the outbox (counters, storage, the status rows capture writes there) and the uplink's
own stats, so `edgegw status` at the gateway shows exactly what the platform receives.
"""

from __future__ import annotations

from typing import Any

from edge.outbox import Outbox
from edge.types import Origin
from edge.uplink.config import UplinkConfig
from edge.uplink.stats import UplinkStats


def alarm_signature(outbox: Outbox) -> tuple[object, ...]:
    """What the alarm list depends on: a change means the status goes out at once."""
    c = outbox.counters()
    return (c.get("dropped_quota", 0), c.get("corrupt_replaced", 0), c.get("expired", 0), outbox.storage().disk_full)


def status_body(outbox: Outbox, origin: Origin, cfg: UplinkConfig, stats: UplinkStats, *, online: bool,
                protocol: str, now: float) -> dict[str, Any]:
    """The retained status body."""
    counters = outbox.counters()
    storage = outbox.storage()
    components = outbox.get_status()
    capture = components.get("capture", {})
    alarms = [name for name, on in (
        ("outbox_quota", counters.get("dropped_quota", 0) > 0),
        ("outbox_corrupt", counters.get("corrupt_replaced", 0) > 0),
        ("disk_full", storage.disk_full),
    ) if on]
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
        "storage": {"used_bytes": storage.used_bytes, "quota_bytes": storage.quota_bytes,
                    "disk_free_bytes": storage.disk_free_bytes, "full_since": storage.full_since,
                    "full_errors": counters.get("full_errors", 0)},
        "cameras": capture.get("cameras", {}),
        "ports": capture.get("ports", {}),
        "seq": {"last": outbox.last_seq(), "floor": outbox.seq_floor()},
        "uplink": {"protocol": protocol, "connects": stats.connects, "attempts": stats.attempts,
                   "last_error": stats.last_error, "ack_mode": cfg.ack_mode, "window": cfg.window,
                   "resent": counters.get("resent", 0), "latency_ms": stats.latency_ms()},
        "components": components,
    }


def uplink_state(stats: UplinkStats, protocol: str) -> dict[str, Any]:
    """The uplink's own row in the outbox's status table (read by `edgegw status`)."""
    return {"connected": stats.connected, "last_error": stats.last_error, "protocol": protocol,
            "published": stats.published, "acked": stats.acked, "attempts": stats.attempts,
            "retry_in_s": stats.retry_in_s}
