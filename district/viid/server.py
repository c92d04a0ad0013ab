"""Our side of /VIID/Subscribes: the upper platform subscribes to our device and tollgate catalogues.

POST creates (or replaces) subscriptions, PUT changes them (OperateType 1 cancels), DELETE
?IDList=a,b cancels. Only SubscribeDetail 3 (采集设备目录), 4 (采集设备状态) and 7 (视频卡口目录)
are answered; a subscription to captured records (faces, people, vehicles: 11-16) is refused with
StatusCode 4, since those are personal data that never leave the district this way. Each answer
is a ResponseStatusListObject with one status per SubscribeID.

A ReceiveAddr must name a host in `[viid].receive_hosts` (default: the upper platform's own host):
otherwise anyone who can reach this port could make the platform post to any address.
Requests must name the upper platform in `User-Identify` when `[viid].server_id` is set; bind the
port to the interface the upper platform reaches, behind its firewall rule (docs/district.md).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from district.config import ViidConfig
from district.viid import protocol as p
from district.viid.ids import local_time, parse_local_time
from district.viid.outbox import Outbox, Subscription
from edge.compat import UTC

log = logging.getLogger(__name__)
_MAX_BODY = 256 * 1024


class _InvalidError(ValueError):
    """One subscription object that cannot be accepted; the message goes into StatusString."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


def _subscription(obj: Any, tz: ZoneInfo, hosts: frozenset[str]) -> Subscription:
    if not isinstance(obj, Mapping):
        raise _InvalidError(p.StatusCode.INVALID_JSON_CONTENT, "SubscribeObject is not an object")
    sid = str(obj.get("SubscribeID") or "")
    if not sid or len(sid) > 64 or not sid.isascii() or not sid.isalnum():
        raise _InvalidError(p.StatusCode.INVALID_JSON_CONTENT, "SubscribeID missing or not 1-64 letters/digits")
    details = tuple(d.strip() for d in str(obj.get("SubscribeDetail") or "").split(",") if d.strip())
    if not details:
        raise _InvalidError(p.StatusCode.INVALID_JSON_CONTENT, "SubscribeDetail missing")
    refused = [d for d in details if d not in p.SubscribeDetail.ANSWERED]
    if refused:
        raise _InvalidError(p.StatusCode.INVALID_OPERATION, f"SubscribeDetail {','.join(refused)} is not offered: "
                       "only device (3), device status (4) and tollgate (7) catalogues")
    addr = str(obj.get("ReceiveAddr") or "")
    if not addr.startswith(("http://", "https://")) or len(addr) > 500:
        raise _InvalidError(p.StatusCode.INVALID_JSON_CONTENT, "ReceiveAddr must be an http(s) URL")
    if (urlsplit(addr).hostname or "") not in hosts:
        raise _InvalidError(p.StatusCode.INVALID_OPERATION, "ReceiveAddr names a host not in [viid].receive_hosts")
    try:
        begin = parse_local_time(str(obj["BeginTime"]), tz) if obj.get("BeginTime") else None
        end = parse_local_time(str(obj["EndTime"]), tz) if obj.get("EndTime") else None
    except ValueError:
        raise _InvalidError(p.StatusCode.INVALID_JSON_CONTENT, "BeginTime/EndTime must be yyyyMMddHHmmss") from None
    interval = obj.get("ReportInterval")
    try:
        report_s = float(interval) if interval not in (None, "") else None
    except (TypeError, ValueError):
        raise _InvalidError(p.StatusCode.INVALID_JSON_CONTENT, "ReportInterval must be a number of seconds") from None
    if report_s is not None and report_s <= 0:
        report_s = None
    return Subscription(sid, details, str(obj.get("ResourceURI") or ""), addr, str(obj.get("Title") or "")[:200],
                        str(obj.get("ApplicantName") or "")[:100], begin, end, report_s)


def create_viid_app(cfg: ViidConfig, outbox: Outbox, *, on_change: Callable[[], None] | None = None) -> FastAPI:
    """The FastAPI app serving /VIID/Subscribes for the upper platform."""
    app = FastAPI(title="edgegw district GA/T 1400 subscriptions", openapi_url=None, docs_url=None, redoc_url=None)
    tz = ZoneInfo(cfg.timezone)
    hosts = frozenset(cfg.receive_hosts or [urlsplit(cfg.server_url).hostname or ""])

    def now() -> str:
        return local_time(datetime.now(UTC), tz)

    def answer(statuses: list[dict[str, Any]], http: int = 200) -> JSONResponse:
        return JSONResponse(p.status_list(statuses), status_code=http, media_type="application/json")

    def allowed(request: Request) -> bool:
        return cfg.server_id is None or request.headers.get("User-Identify") == cfg.server_id

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > _MAX_BODY:
            raise _InvalidError(p.StatusCode.INVALID_JSON_CONTENT, "body too large")
        try:
            return json.loads(raw)
        except ValueError:
            raise _InvalidError(p.StatusCode.INVALID_JSON_FORMAT, "body is not JSON") from None

    async def place(request: Request, allow_cancel: bool) -> JSONResponse:
        if not allowed(request):
            return answer([p.status_object(p.SUBSCRIBES, p.StatusCode.INVALID_OPERATION, "unknown User-Identify",
                                           now())], 403)
        try:
            data = await body_of(request)
            items = data["SubscribeListObject"]["SubscribeObject"]
        except _InvalidError as exc:
            return answer([p.status_object(p.SUBSCRIBES, exc.code, str(exc), now())], 400)
        except (KeyError, TypeError):
            return answer([p.status_object(p.SUBSCRIBES, p.StatusCode.INVALID_JSON_CONTENT,
                                           "no SubscribeListObject.SubscribeObject", now())], 400)
        if isinstance(items, Mapping):
            items = [items]
        out = []
        for obj in items if isinstance(items, list) else []:
            sid = str(obj.get("SubscribeID") or "") if isinstance(obj, Mapping) else ""
            try:
                if allow_cancel and isinstance(obj, Mapping) and str(obj.get("OperateType", "0")) == "1":
                    known = await run_in_threadpool(outbox.cancel_subscriptions, [sid])
                    if not known:
                        raise _InvalidError(p.StatusCode.INVALID_OPERATION, "no such subscription")
                else:
                    sub = _subscription(obj, tz, hosts)
                    await run_in_threadpool(outbox.upsert_subscription, sub)
                    log.info("VIID subscription %s placed (details %s)", sub.subscribe_id, ",".join(sub.details))
                out.append(p.status_object(p.SUBSCRIBES, p.StatusCode.OK, "OK", now(), sid))
            except _InvalidError as exc:
                out.append(p.status_object(p.SUBSCRIBES, exc.code, str(exc), now(), sid or None))
        if on_change is not None:
            on_change()
        return answer(out)

    @app.post(p.SUBSCRIBES)
    async def post_subscribes(request: Request) -> JSONResponse:
        return await place(request, allow_cancel=False)

    @app.put(p.SUBSCRIBES)
    async def put_subscribes(request: Request) -> JSONResponse:
        return await place(request, allow_cancel=True)

    @app.delete(p.SUBSCRIBES)
    async def delete_subscribes(request: Request, IDList: str = "") -> JSONResponse:  # noqa: N803 (the standard's name)
        if not allowed(request):
            return answer([p.status_object(p.SUBSCRIBES, p.StatusCode.INVALID_OPERATION, "unknown User-Identify",
                                           now())], 403)
        ids = [x.strip() for x in IDList.split(",") if x.strip()]
        known = set(await run_in_threadpool(outbox.cancel_subscriptions, ids))
        if on_change is not None:
            on_change()
        return answer([p.status_object(p.SUBSCRIBES, p.StatusCode.OK if i in known else p.StatusCode.INVALID_OPERATION,
                                       "OK" if i in known else "no such subscription", now(), i) for i in ids])

    return app
