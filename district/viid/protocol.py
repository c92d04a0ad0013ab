"""The GA/T 1400 JSON objects this bridge sends and reads (only the fields it uses).

Every body is built here from plain values, so what can leave the platform is visible in one place;
`guard.check_outgoing` then checks the finished body before any request is made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "application/VIID+JSON;charset=UTF-8"

REGISTER = "/VIID/System/Register"
UNREGISTER = "/VIID/System/UnRegister"
KEEPALIVE = "/VIID/System/Keepalive"
TIME = "/VIID/System/Time"
SUBSCRIBES = "/VIID/Subscribes"
SUBSCRIBE_NOTIFICATIONS = "/VIID/SubscribeNotifications"
DISPOSITION_NOTIFICATIONS = "/VIID/DispositionNotifications"


class StatusCode:
    """ResponseStatusObject.StatusCode values (GA/T 1400.4)."""

    OK = "0"
    OTHER_ERROR = "1"
    DEVICE_BUSY = "2"
    DEVICE_ERROR = "3"
    INVALID_OPERATION = "4"
    INVALID_JSON_FORMAT = "7"
    INVALID_JSON_CONTENT = "8"


class SubscribeDetail:
    """The SubscribeDetail codes answered here: catalogues and status, never captured records."""

    APE_CATALOG = "3"  # 采集设备目录
    APE_STATUS = "4"  # 采集设备状态
    TOLLGATE_CATALOG = "7"  # 视频卡口目录
    ANSWERED = frozenset({APE_CATALOG, APE_STATUS, TOLLGATE_CATALOG})


@dataclass(frozen=True, slots=True)
class ResponseStatus:
    """One ResponseStatusObject."""

    id: str | None
    request_url: str | None
    code: str
    text: str
    local_time: str | None

    @property
    def ok(self) -> bool:
        """StatusCode 0 (正常)."""
        return self.code == StatusCode.OK


class ProtocolError(ValueError):
    """A body that is not the GA/T 1400 object expected."""


def parse_statuses(body: Any) -> list[ResponseStatus]:
    """The status objects in a ResponseStatusObject or ResponseStatusListObject body."""
    if not isinstance(body, Mapping):
        raise ProtocolError("the response is not a JSON object")
    if "ResponseStatusListObject" in body:
        inner = body["ResponseStatusListObject"]
        items = inner.get("ResponseStatusObject") if isinstance(inner, Mapping) else None
        if isinstance(items, Mapping):
            items = [items]
        if not isinstance(items, list):
            raise ProtocolError("ResponseStatusListObject holds no ResponseStatusObject list")
    elif "ResponseStatusObject" in body:
        items = [body["ResponseStatusObject"]]
    else:
        raise ProtocolError("the response has no ResponseStatusObject")
    out = []
    for it in items:
        if not isinstance(it, Mapping) or "StatusCode" not in it:
            raise ProtocolError("a ResponseStatusObject has no StatusCode")
        out.append(ResponseStatus(_opt(it.get("Id")), _opt(it.get("RequestURL")), str(it["StatusCode"]),
                                  str(it.get("StatusString", "")), _opt(it.get("LocalTime"))))
    return out


def _opt(v: Any) -> str | None:
    return None if v is None else str(v)


def status_object(request_url: str, code: str, text: str, local: str, id_: str | None = None) -> dict[str, Any]:
    """A ResponseStatusObject (our server's answers)."""
    obj: dict[str, Any] = {"RequestURL": request_url, "StatusCode": code, "StatusString": text, "LocalTime": local}
    if id_ is not None:
        obj["Id"] = id_
    return obj


def status_list(objs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A ResponseStatusListObject."""
    return {"ResponseStatusListObject": {"ResponseStatusObject": list(objs)}}


def register_body(device_id: str) -> dict[str, Any]:
    """POST /VIID/System/Register."""
    return {"RegisterObject": {"DeviceID": device_id}}


def unregister_body(device_id: str) -> dict[str, Any]:
    """POST /VIID/System/UnRegister."""
    return {"UnRegisterObject": {"DeviceID": device_id}}


def keepalive_body(device_id: str) -> dict[str, Any]:
    """POST /VIID/System/Keepalive."""
    return {"KeepaliveObject": {"DeviceID": device_id}}


def subscribe_notifications(objs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """POST …/SubscribeNotifications."""
    return {"SubscribeNotificationListObject": {"SubscribeNotificationObject": list(objs)}}


def disposition_notifications(objs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """POST …/DispositionNotifications."""
    return {"DispositionNotificationListObject": {"DispositionNotificationObject": list(objs)}}


def notification_ids(body: Mapping[str, Any]) -> list[str]:
    """The NotificationIDs in a notification list body (what an acknowledgement must answer)."""
    for outer, inner in (("SubscribeNotificationListObject", "SubscribeNotificationObject"),
                         ("DispositionNotificationListObject", "DispositionNotificationObject")):
        if outer in body:
            return [str(o["NotificationID"]) for o in body[outer][inner]]
    raise ProtocolError("not a notification list")
