"""The notification objects, built from what the district holds that is not personal.

A disposition notification (布控告警) says: watch-list X (the upper platform's DispositionID) had a
hit at this time on this gateway, and CntObjectID is the id of the passage it matched. It does not
say what matched: no plate number, no pseudonym, no image. The passage's id is derived from the
passage's event id with the gateway's own device code, so the gateway, which holds the sealed
record, can later build that object (for an approved case, through its query door) under the
same id.

Subscription reports carry the device (APE) and tollgate catalogues and their online status,
from the configuration and the gateways' latest status rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from district.config import ViidConfig, ViidDevice
from district.viid.ids import SubType, disposition_id, local_time, object_id
from district.viid.protocol import SubscribeDetail


@dataclass(frozen=True, slots=True)
class WatchHit:
    """The columns of one watch_hit event the notification is built from."""

    event_id: uuid.UUID
    ts: datetime
    gateway: str  # DISTRICT/COMMUNITY/GATEWAY
    attrs: Mapping[str, Any]
    links: Sequence[str]


def disposition_object(hit: WatchHit, cfg: ViidConfig, tz: ZoneInfo, notification_id: str) -> dict[str, Any]:
    """One DispositionNotificationObject for a watch hit (no personal object: see guard.py)."""
    list_id = str(hit.attrs.get("list_id", ""))
    device = cfg.devices.get(hit.gateway)
    obj: dict[str, Any] = {
        "NotificationID": notification_id,
        "DispositionID": cfg.dispositions.get(list_id) or disposition_id(cfg.org_code, list_id),
        "Title": f"watch-list {list_id} hit ({hit.attrs.get('id_kind', 'identifier')})",
        "TriggerTime": local_time(hit.ts, tz),
    }
    if hit.links:
        try:
            passage = uuid.UUID(hit.links[0])
        except ValueError:
            passage = None
        if passage is not None and passage.version == 7:
            obj["CntObjectID"] = object_id(device.ape_id if device else cfg.device_id, SubType.PASSAGE, passage, tz)
    return obj


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A configured gateway and whether its latest status says it is up."""

    key: str
    device: ViidDevice
    online: bool


def _ape(d: DeviceState, cfg: ViidConfig) -> dict[str, Any]:
    obj: dict[str, Any] = {"ApeID": d.device.ape_id, "Name": d.device.name or d.key.split("/")[-1],
                           "PlaceCode": d.device.place_code, "Place": d.device.place, "OwnerApsID": cfg.device_id,
                           "IsOnline": "1" if d.online else "2"}
    if d.device.longitude is not None and d.device.latitude is not None:
        obj["Longitude"], obj["Latitude"] = d.device.longitude, d.device.latitude
    return obj


def _tollgate(d: DeviceState) -> dict[str, Any]:
    assert d.device.tollgate_id is not None
    obj: dict[str, Any] = {"TollgateID": d.device.tollgate_id, "Name": d.device.name or d.key.split("/")[-1],
                           "PlaceCode": d.device.place_code, "Place": d.device.place, "LaneNum": d.device.lanes,
                           # 1 正常 / 9 其他: a gateway whose status went quiet is not "stopped" (2).
                           "Status": "1" if d.online else "9"}
    if d.device.longitude is not None and d.device.latitude is not None:
        obj["Longitude"], obj["Latitude"] = d.device.longitude, d.device.latitude
    return obj


def in_scope(d: DeviceState, resource_uri: str, cfg: ViidConfig) -> bool:
    """A subscription's ResourceURI: empty or our id means every device; else a comma list of ids."""
    ids = {x.strip() for x in resource_uri.split(",") if x.strip()}
    return not ids or cfg.device_id in ids or d.device.ape_id in ids or d.device.tollgate_id in ids


def report_object(subscribe_id: str, details: Sequence[str], resource_uri: str, devices: Sequence[DeviceState], *,
                  cfg: ViidConfig, tz: ZoneInfo, notification_id: str, now: datetime) -> dict[str, Any]:
    """One SubscribeNotificationObject answering a subscription's details for the devices in scope."""
    scoped = [d for d in devices if in_scope(d, resource_uri, cfg)]
    obj: dict[str, Any] = {"NotificationID": notification_id, "SubscribeID": subscribe_id,
                           "Title": "device catalogue and status", "TriggerTime": local_time(now, tz)}
    info: list[str] = []
    if SubscribeDetail.APE_CATALOG in details:
        obj["DeviceList"] = {"APEObject": [_ape(d, cfg) for d in scoped]}
        info += [d.device.ape_id for d in scoped]
    if SubscribeDetail.APE_STATUS in details:
        obj["DeviceStatusList"] = {"APEStatusObject": [
            {"ApeID": d.device.ape_id, "IsOnline": "1" if d.online else "2", "CurrentTime": local_time(now, tz)}
            for d in scoped]}
        info += [d.device.ape_id for d in scoped if d.device.ape_id not in info]
    if SubscribeDetail.TOLLGATE_CATALOG in details:
        gates = [d for d in scoped if d.device.tollgate_id]
        obj["TollgateObjectList"] = {"TollgateObject": [_tollgate(d) for d in gates]}
        info += [str(d.device.tollgate_id) for d in gates]
    obj["InfoIDs"] = ",".join(info)
    return obj
