"""The console's Prometheus metrics: in-process through the real app, and from the real `edgegw console` process
(its own loopback port, /livez and /readyz); never a user name, address or identifier in a label."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from edge.app.console import GatewayBackend
from edge.console.users import Role, UserStore
from edge.console.web import create_app
from tests.conftest import ROOT, free_port, http_get, new_gateway

CAMERAS = '\n[[cameras]]\nid = "gate1"\nkind = "fake"\nwidth = 640\nheight = 480\n'


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _value(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not in the exposition")


def test_logins_saves_and_latency_are_counted_without_identifiers(tmp_path: Path) -> None:
    cfg = new_gateway(tmp_path, CAMERAS)
    backend = GatewayBackend(cfg)
    users = UserStore(tmp_path / "data" / "console.db")
    try:
        users.add("alice_secret", Role.INSTALLER, "installer-password", must_change=False)
        app = create_app(backend, users, secure_cookies=False)
        client = TestClient(app, follow_redirects=False)
        token = _csrf(client.get("/login").text)
        assert client.post("/login", data={"username": "alice_secret", "password": "wrong-password",
                                           "csrf": token}).status_code == 401
        time.sleep(1.05)  # the throttle allows one a second
        assert client.post("/login", data={"username": "alice_secret", "password": "installer-password",
                                           "csrf": token}).status_code == 303
        token = _csrf(client.get("/login").text)  # a successful login ends the login form's cookie
        assert client.post("/login", data={"username": "alice_secret", "password": "installer-password",
                                           "csrf": token}).status_code == 429  # the second within a second
        assert client.post("/login", data={"username": "x", "password": "y", "csrf": "stale"}).status_code == 403
        edit = _csrf(client.get("/camera/gate1/editor").text)
        assert client.post("/camera/gate1/gate-line", data={"csrf": edit, "ax": "5", "ay": "5", "bx": "5",
                                                              "by": "5"}).status_code == 400
        assert client.post("/camera/gate1/gate-line", data={"csrf": edit, "ax": "0", "ay": "240", "bx": "639",
                                                              "by": "240"}).status_code == 200
        text = generate_latest(app.state.metrics.telemetry.registry).decode()
    finally:
        users.close()
        backend.close()
    assert _value(text, "edgegw_console_logins_total", outcome="ok") == 1
    assert _value(text, "edgegw_console_logins_total", outcome="failed") == 1
    assert _value(text, "edgegw_console_logins_total", outcome="throttled") == 1
    assert _value(text, "edgegw_console_logins_total", outcome="form_expired") == 1
    assert _value(text, "edgegw_console_config_saves_total", change="gate_line", outcome="refused") == 1
    assert _value(text, "edgegw_console_config_saves_total", change="gate_line", outcome="saved") == 1
    assert _value(text, "edgegw_console_config_saves_total", change="zones_masks", outcome="saved") == 0
    assert _value(text, "edgegw_console_preview_sessions") == 0
    assert _value(text, "edgegw_console_request_seconds_count", method="POST", route="/login") == 4
    assert _value(text, "edgegw_console_request_seconds_count", method="GET", route="/camera/{cam_id}/editor") == 1
    assert _value(text, "edgegw_console_request_seconds_count", method="GET", route="/login") == 2
    assert 'daemon="console"' in text  # edgegw_build_info
    # Route templates, fixed words: no user name, no camera path typed by a client, no address.
    assert "alice_secret" not in text and "testclient" not in text and "/camera/gate1" not in text


def test_the_console_process_serves_metrics_and_probes_on_loopback(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    cfg = new_gateway(tmp_path, CAMERAS + f"\n[metrics]\ncapture_port = 0\nuplink_port = 0\n"
                                          f"console_port = {metrics_port}\n\n[console]\nport = {port}\n")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "console", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{metrics_port}"
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline and status != 200:
            try:
                status, body = http_get(base + "/readyz")
            except OSError:
                time.sleep(0.2)
        assert status == 200 and body.startswith("ok"), body
        assert http_get(base + "/livez")[0] == 200
        code, text = http_get(base + "/metrics")
        assert code == 200 and "edgegw_console_logins_total" in text and 'daemon="console"' in text
        # The console's own pages still need a session; the exposition is on its own loopback port.
        assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
