"""Can the gateway reach a network camera? A TCP connect and one RTSP DESCRIBE (or HTTP GET), classified.

`edgegw check` needs distinct answers for distinct faults, which OpenCV's "cannot open" does not
give: nothing listening (refused), no route or a dead camera (timeout), wrong credentials (401),
a wrong stream path (404). Digest and Basic authentication are both answered. Nothing returned
here contains the credentials.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from drivers.camera.redact import redact_url

Fault = Literal["ok", "refused", "timeout", "unauthorised", "not_found", "unreachable", "protocol"]

HINTS: dict[Fault, str] = {
    "ok": "",
    "refused": "nothing listens there: check the camera's IP address and port and that RTSP is enabled on it",
    "timeout": "no answer: check the cable or PoE power, the VLAN and any firewall between gateway and camera",
    "unauthorised": "the camera refused the credentials: check the user and password in credentials_file "
                    "(and that the account may stream)",
    "not_found": "the camera has no stream at that path: check the URL path (e.g. /stream1, "
                 "/Streaming/Channels/101, /cam/realmonitor?channel=1&subtype=0)",
    "unreachable": "no route to the camera: check the address and the gateway's network settings",
    "protocol": "the camera answered but not as expected: check the URL scheme and port",
}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one reach probe."""

    fault: Fault
    detail: str

    @property
    def hint(self) -> str:
        """The fix an installer can act on."""
        return HINTS[self.fault]


def _status_line(data: bytes) -> tuple[int, dict[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    m = re.match(r"^(?:RTSP|HTTP)/\d\.\d (\d{3})", lines[0])
    if not m:
        raise ValueError(lines[0][:60])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    return int(m.group(1)), headers


def _digest(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324 - RFC 2617 mandates MD5
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()  # noqa: S324
    if "auth" in params.get("qop", ""):
        nc, cnonce = "00000001", os.urandom(8).hex()
        resp = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()  # noqa: S324
        return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{resp}", '
                f'qop=auth, nc={nc}, cnonce="{cnonce}"')
    resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()  # noqa: S324
    return f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{resp}"'


def _request(sock: socket.socket, scheme: str, uri: str, host: str, *, cseq: int, auth: str | None) -> bytes:
    if scheme == "rtsp":
        lines = [f"DESCRIBE {uri} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp", "User-Agent: edgegw-check"]
    else:
        lines = [f"GET {uri} HTTP/1.1", f"Host: {host}", "User-Agent: edgegw-check", "Connection: close"]
    if auth:
        lines.append(f"Authorization: {auth}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def probe_stream(url: str, credentials: tuple[str, str] | None, timeout_s: float = 5.0) -> ProbeResult:
    """Connect to an rtsp:// or http:// camera URL and ask for the stream once."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("rtsp", "http"):
        return ProbeResult("ok", f"{scheme}:// is not probed beyond opening the stream")
    host = parts.hostname or ""
    port = parts.port or (554 if scheme == "rtsp" else 80)
    where = f"{host}:{port}"
    uri = url if scheme == "rtsp" else (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except ConnectionRefusedError:
        return ProbeResult("refused", f"{where} refused the connection")
    except TimeoutError:
        return ProbeResult("timeout", f"{where} did not answer within {timeout_s:.0f} s")
    except OSError as exc:
        return ProbeResult("unreachable", f"{where}: {exc.strerror or exc}")
    try:
        sock.settimeout(timeout_s)
        code, headers = _status_line(_request(sock, scheme, uri, where, cseq=1, auth=None))
        if code == 401 and credentials is not None:
            challenge = headers.get("www-authenticate", "")
            user, password = credentials
            method = "DESCRIBE" if scheme == "rtsp" else "GET"
            if challenge.lower().startswith("digest"):
                auth = _digest(challenge, user, password, method, uri)
            else:
                auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if scheme == "http":  # Connection: close: ask again on a fresh connection
                sock.close()
                sock = socket.create_connection((host, port), timeout=timeout_s)
            code, headers = _status_line(_request(sock, scheme, uri, where, cseq=2, auth=auth))
    except TimeoutError:
        return ProbeResult("timeout", f"{where} accepted the connection but sent no answer within {timeout_s:.0f} s")
    except (OSError, ValueError) as exc:
        return ProbeResult("protocol", f"{where}: unexpected answer ({exc})")
    finally:
        sock.close()
    path = redact_url(url)
    if code == 401:
        return ProbeResult("unauthorised", f"{path}: 401 Unauthorized"
                           + ("" if credentials else " and no credentials_file is configured"))
    if code == 404:
        return ProbeResult("not_found", f"{path}: 404 Not Found")
    if 200 <= code < 300:
        return ProbeResult("ok", f"{path}: {code} (stream offered)")
    return ProbeResult("protocol", f"{path}: answered {code}")
