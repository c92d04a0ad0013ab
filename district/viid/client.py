"""The /VIID client: register (HTTP digest), keepalive, unregister, time, and posting bodies.

httpx does the digest challenge/response (RFC 7616; MD5 with qop=auth is what GA/T 1400 servers
send): the first request draws a 401 with the challenge, the retry carries the response, and later
requests reuse the nonce with a counted `nc` until the server asks again. A 401 that survives the
retry is a refusal (wrong user or password), not an outage, and is reported as such.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from district.config import ViidConfig
from district.errors import DistrictError
from district.viid import protocol as p
from district.viid.guard import check_outgoing
from district.viid.ids import parse_local_time
from edge.compat import UTC

log = logging.getLogger(__name__)


class ViidUnavailableError(DistrictError):
    """The upper platform cannot be reached or answered 5xx / garbage: retry later."""


class ViidRefusedError(DistrictError):
    """The upper platform refused: 401 after the digest retry, or a non-zero StatusCode."""

    def __init__(self, message: str, status: p.ResponseStatus | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class TimeSync:
    """One GET /VIID/System/Time: the server's clock minus ours (seconds), and the round trip."""

    offset_s: float
    rtt_s: float
    server_time: datetime


class ViidClient:
    """One upper platform, one httpx connection pool; every call raises Unavailable or Refused."""

    def __init__(self, cfg: ViidConfig, password: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.timezone)
        self._http = httpx.Client(
            base_url=cfg.server_url.rstrip("/"), auth=httpx.DigestAuth(cfg.username or cfg.device_id, password),
            timeout=cfg.request_timeout_s, transport=transport,
            # User-Identify names the sender on every request, as GA/T 1400 asks.
            headers={"User-Identify": cfg.device_id, "Content-Type": p.CONTENT_TYPE, "Accept": "application/json"})

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- requests ---------------------------------------------------------------------------------
    def _send(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> Any:
        if body is not None:
            check_outgoing(body)  # the last look before anything leaves
        try:
            resp = self._http.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise ViidUnavailableError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code == 401:
            raise ViidRefusedError(f"{method} {url}: 401 after the digest challenge (user or password refused)")
        if resp.status_code >= 500 or resp.status_code in (404, 408, 429):
            raise ViidUnavailableError(f"{method} {url}: HTTP {resp.status_code}")
        try:
            return resp.json()
        except ValueError as exc:
            raise ViidUnavailableError(f"{method} {url}: HTTP {resp.status_code}, body is not JSON") from exc

    def _expect_ok(self, url: str, body: Mapping[str, Any]) -> p.ResponseStatus:
        data = self._send("POST", url, body)
        try:
            st = p.parse_statuses(data)[0]
        except p.ProtocolError as exc:
            raise ViidUnavailableError(f"POST {url}: {exc}") from exc
        if not st.ok:
            raise ViidRefusedError(f"POST {url}: StatusCode {st.code} {st.text}", st)
        return st

    def register(self) -> p.ResponseStatus:
        """POST /VIID/System/Register (digest challenge, then the registration)."""
        return self._expect_ok(p.REGISTER, p.register_body(self.cfg.device_id))

    def keepalive(self) -> p.ResponseStatus:
        """POST /VIID/System/Keepalive; a refusal means the server no longer knows us."""
        return self._expect_ok(p.KEEPALIVE, p.keepalive_body(self.cfg.device_id))

    def unregister(self) -> p.ResponseStatus:
        """POST /VIID/System/UnRegister."""
        return self._expect_ok(p.UNREGISTER, p.unregister_body(self.cfg.device_id))

    def time(self) -> TimeSync:
        """GET /VIID/System/Time: the offset of the server's clock from ours, at one-second resolution."""
        t0 = time.time()
        data = self._send("GET", p.TIME)
        t1 = time.time()
        obj = data.get("SystemTimeObject") if isinstance(data, Mapping) else None
        if not isinstance(obj, Mapping) or "LocalTime" not in obj:
            raise ViidUnavailableError("GET /VIID/System/Time: no SystemTimeObject.LocalTime")
        tz = self.tz
        zone = obj.get("TimeZone")
        if isinstance(zone, str) and "/" in zone:  # an IANA name; anything else: our configured zone
            try:
                tz = ZoneInfo(zone)
            except (KeyError, ValueError):
                tz = self.tz
        try:
            server = parse_local_time(str(obj["LocalTime"]), tz)
        except ValueError as exc:
            raise ViidUnavailableError(f"GET /VIID/System/Time: {exc}") from exc
        # The server's seconds are truncated: its clock read is, on average, half a second later.
        mid = (t0 + t1) / 2
        return TimeSync(server.timestamp() + 0.5 - mid, t1 - t0, server.astimezone(UTC))

    def post_notifications(self, url: str, body: Mapping[str, Any]) -> list[p.ResponseStatus]:
        """POST a notification list; the statuses the server answered (one per id, or one for all)."""
        data = self._send("POST", url, body)
        try:
            return p.parse_statuses(data)
        except p.ProtocolError as exc:
            raise ViidUnavailableError(f"POST {url}: {exc}") from exc
