"""A mock GA/T 1400 upper platform: a real HTTP server (http.server, threads) on a free port.

It checks HTTP digest auth itself (RFC 7616, MD5, qop=auth; its own code, not the client's), keeps
who is registered, answers keepalive/time, and records every notification it receives. Faults are
switches: `fail_503` (every request answers 503), `go_down()`/`come_up()` (the port refuses
connections, then listens again on the same port), `forget()` (registrations lost, so keepalives
are refused), `reject[notification_id] = n` (answer StatusCode 1 for that id n times) and
`skew_s` (the clock it reports). Every received body is kept in `bodies`, for the privacy checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

REALM = "viid-mock"
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')
TZ = ZoneInfo("Asia/Shanghai")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _parse_auth(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "digest":
        return {}
    return {k: q if q else u for k, q, u in _PARAM.findall(rest)}


@dataclass
class MockState:
    """Everything the mock knows and every switch the tests flip."""

    users: dict[str, str]
    nonces: set[str] = field(default_factory=set)
    registered: set[str] = field(default_factory=set)
    fail_503: bool = False
    skew_s: float = 0.0
    reject: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, HTTP status
    registrations: int = 0
    unregistrations: int = 0
    received: list[str] = field(default_factory=list)  # NotificationIDs, every attempt
    acked: Counter[str] = field(default_factory=Counter)  # NotificationIDs answered with StatusCode 0
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # NotificationID -> last object
    bodies: list[str] = field(default_factory=list)  # raw request bodies (privacy checks)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _status(url: str, code: str, text: str, id_: str | None = None) -> dict[str, Any]:
    obj = {"RequestURL": url, "StatusCode": code, "StatusString": text,
           "LocalTime": datetime.now(TZ).strftime("%Y%m%d%H%M%S")}
    if id_ is not None:
        obj["Id"] = id_
    return obj


class _Handler(BaseHTTPRequestHandler):
    server_version = "viid-mock/1"
    state: MockState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        # Recorded before the reply leaves: a client that has its answer must find it in the record.
        with self.state.lock:
            self.state.requests.append((self.command, self.path, code))
        self.send_response(code)
        self.send_header("Content-Type", "application/VIID+JSON;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _challenge(self) -> None:
        nonce = secrets.token_hex(16)
        with self.state.lock:
            self.state.nonces.add(nonce)
        self._reply(401, _status(self.path, "4", "unauthorized"), {
            "WWW-Authenticate": f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", '
                                f'opaque="{secrets.token_hex(8)}", algorithm=MD5'})

    def _authorised(self) -> str | None:
        a = _parse_auth(self.headers.get("Authorization", ""))
        user = a.get("username", "")
        with self.state.lock:
            password = self.state.users.get(user)
            nonce_ok = a.get("nonce") in self.state.nonces
        if password is None or not nonce_ok or a.get("uri") != self.path or a.get("qop") != "auth":
            return None
        ha1 = _md5(f"{user}:{REALM}:{password}")
        ha2 = _md5(f"{self.command}:{a['uri']}")
        expected = _md5(f"{ha1}:{a['nonce']}:{a.get('nc', '')}:{a.get('cnonce', '')}:auth:{ha2}")
        return user if secrets.compare_digest(expected, a.get("response", "")) else None

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        with self.state.lock:
            self.state.bodies.append(raw.decode("utf-8", "replace"))
        return json.loads(raw) if raw else None

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        st = self.state
        body = self._body() if self.command == "POST" else None
        if st.fail_503:
            self._reply(503, {"error": "unavailable"})
            return
        user = self._authorised()
        if user is None:
            self._challenge()
            return
        path = self.path
        if path == "/VIID/System/Register":
            with st.lock:
                st.registered.add(body["RegisterObject"]["DeviceID"])
                st.registrations += 1
            self._reply(200, {"ResponseStatusObject": _status(path, "0", "OK", user)})
        elif path == "/VIID/System/UnRegister":
            with st.lock:
                st.registered.discard(body["UnRegisterObject"]["DeviceID"])
                st.unregistrations += 1
            self._reply(200, {"ResponseStatusObject": _status(path, "0", "OK", user)})
        elif path == "/VIID/System/Keepalive":
            ok = body["KeepaliveObject"]["DeviceID"] in st.registered
            self._reply(200, {"ResponseStatusObject": _status(path, "0" if ok else "4",
                                                              "OK" if ok else "not registered", user)})
        elif path == "/VIID/System/Time":
            t = datetime.fromtimestamp(time.time() + st.skew_s, TZ)
            self._reply(200, {"SystemTimeObject": {"VIIDServerID": "31000000005030000001", "TimeMode": "1",
                                                   "LocalTime": t.strftime("%Y%m%d%H%M%S"),
                                                   "TimeZone": "Asia/Shanghai"}})
        elif path in ("/VIID/DispositionNotifications", "/VIID/SubscribeNotifications"):
            kind = "Disposition" if "Disposition" in path else "Subscribe"
            outer, inner = f"{kind}NotificationListObject", f"{kind}NotificationObject"
            statuses = []
            for obj in body[outer][inner]:
                nid = obj["NotificationID"]
                with st.lock:
                    st.received.append(nid)
                    st.objects[nid] = obj
                    registered = user in st.registered
                    left = st.reject.get(nid, 0)
                    if left:
                        st.reject[nid] = left - 1
                    elif registered:
                        st.acked[nid] += 1
                code = "4" if not registered else ("1" if left else "0")
                statuses.append(_status(path, code, "OK" if code == "0" else "refused", nid))
            self._reply(200, {"ResponseStatusListObject": {"ResponseStatusObject": statuses}})
        else:
            self._reply(404, _status(path, "4", "no such resource"))


class MockViid:
    """`start()`, `go_down()`, `come_up()`, `close()`; `url` is the base the client is given."""

    def __init__(self, users: dict[str, str], port: int) -> None:
        self.state = MockState(users)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MockViid:
        """Listen (again) on the same port."""
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def go_down(self) -> None:
        """Stop listening: connections are refused until come_up()."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)

    def come_up(self) -> None:
        """Listen again; registrations are lost (a restarted server knows nobody)."""
        with self.state.lock:
            self.state.registered.clear()
            self.state.nonces.clear()
        self.start()

    def forget(self) -> None:
        """Lose every registration while staying up (keepalives are then refused)."""
        with self.state.lock:
            self.state.registered.clear()

    def close(self) -> None:
        """Stop for good."""
        with contextlib.suppress(Exception):
            self.go_down()
