"""Each daemon's telemetry: Prometheus exposition, /livez and /readyz on loopback, and the sd_notify rules
(READY only after the first frame, WATCHDOG from the working loop, STATUS kept current), against the real
capture daemon on a real photo through the real models, and the real uplink against a real mosquitto."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from edge.preview import LEASE_S, LiveChannel, PreviewRequest
from tests.conftest import MODELS_DIR, ROOT, SHARED_DATA, Broker, free_port, http_get, new_gateway

OBAMA = SHARED_DATA / "faces" / "face_recognition" / "obama" / "obama.jpg"
# Label values the exposition may carry: configured names only, never an identifier.
ALLOWED_LABELS = re.compile(r'^(camera|port|model|kind|reason|check|daemon|version|python|le|quantile)$')


def _wait(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http_get(url)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def collect(self, until: float) -> None:
        while time.monotonic() < until:
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())

    def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if m.startswith(prefix):
                    return m
            self.collect(time.monotonic() + 0.2)
        raise AssertionError(f"no {prefix!r} among {self.messages[-5:]}")


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.sock.close()


def _labels(exposition: str) -> set[str]:
    names = set()
    for line in exposition.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        for pair in re.findall(r'(\w+)="', line.split("{", 1)[1].rsplit("}", 1)[0]):
            names.add(pair)
    return names


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge.cli", *cmd], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return out


@pytest.mark.models
def test_capture_metrics_health_notify_and_preview(tmp_path: Path, notify: NotifySocket, broker: Broker) -> None:
    port = free_port()
    cfg = new_gateway(tmp_path, f"""
[models]
dir = "{MODELS_DIR}"

[[cameras]]
id = "gate1"
kind = "file"
path = "{OBAMA}"
pace = "realtime"
fps = 5
loop = true

[gate_lines.gate1]
a = [0, 300]
b = [600, 300]

[metrics]
capture_port = {port}

[mqtt]
host = "{broker.host}"
port = {broker.port}
""")
    proc = _start(["capture", "--config", str(cfg)], {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"})
    try:
        ready = notify.wait_for("READY=1")
        # READY only once the first frame is in: the status line that rides with it says so.
        assert "1/1 camera(s) connected" in ready, ready
        base = f"http://127.0.0.1:{port}"
        assert http_get(base + "/readyz")[0] == 200 and http_get(base + "/livez")[0] == 200
        notify.collect(time.monotonic() + 3.0)
        assert any(m == "WATCHDOG=1" for m in notify.messages)
        time.sleep(2.0)
        code, text = http_get(base + "/metrics")
        assert code == 200
        for needle in ('edgegw_build_info{daemon="capture"', 'edgegw_camera_fps{camera="gate1"}',
                       'edgegw_camera_last_frame_timestamp_seconds{camera="gate1"}',
                       'edgegw_camera_frames_dropped_total{camera="gate1"}',
                       'edgegw_inference_seconds_bucket{le="0.002",model="yunet"}',
                       'edgegw_face_width_pixels_count{camera="gate1"}'):
            assert needle in text, needle
        count = float(re.search(r'edgegw_face_width_pixels_count\{camera="gate1"\} (\S+)', text).group(1))  # type: ignore[union-attr]
        assert count >= 1  # the real face in the real photo, measured
        assert _labels(text) and all(ALLOWED_LABELS.match(n) for n in _labels(text)), _labels(text)
        # Nobody watching: no preview frames are made.
        live = LiveChannel(tmp_path / "data" / "live")
        time.sleep(1.0)
        assert live.latest("gate1") is None
        # A viewer asks: frames appear, scaled to at most 360 lines here, with the overlay drawn.
        deadline = time.monotonic() + 10
        got = None
        while time.monotonic() < deadline and got is None:
            live.request("gate1", PreviewRequest(overlay=True, fps=4, max_height=360))
            time.sleep(0.3)
            got = live.latest("gate1")
        assert got is not None
        img = cv2.imdecode(__import__("numpy").frombuffer(got[1], "uint8"), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] <= 360
        (live.folder / "gate1.want").unlink()  # the lease ends without a release (a console killed)
        time.sleep(LEASE_S + 1.5)
        assert live.latest("gate1") is None  # capture stopped encoding and deleted the last frame
        time.sleep(1.0)
        assert live.latest("gate1") is None
        # STATUS= kept current after READY.
        notify.collect(time.monotonic() + 6.0)
        assert any(m.startswith("STATUS=") and "committed" in m for m in notify.messages)
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
    # The aim window and the PIPL guard rails ride in capture's status (and so in the retained status).
    from edge.app.config import load_config
    from edge.outbox import Outbox

    conf = load_config(cfg)
    outbox = Outbox(conf.path(conf.outbox.path))
    status = outbox.get_status()["capture"]
    outbox.close()
    assert status["aim"]["gate1"]["measure"] == "face_width"  # type: ignore[index]
    assert status["pipl"] == {"resident_matching": False, "impact_assessment_id": None, "signage_ref": None,
                              "card_alternatives": {"gate": []}}


@pytest.mark.models
def test_capture_is_not_ready_before_a_first_frame(tmp_path: Path, notify: NotifySocket) -> None:
    port = free_port()
    cfg = new_gateway(tmp_path, f"""
[models]
dir = "{MODELS_DIR}"

[[cameras]]
id = "dead"
kind = "rtsp"
url = "rtsp://127.0.0.1:{free_port()}/stream1"
open_timeout_s = 1
backoff = {{ initial_s = 0.5, max_s = 1.0 }}

[metrics]
capture_port = {port}
""")
    proc = _start(["capture", "--config", str(cfg)], {"NOTIFY_SOCKET": str(notify.path)})
    try:
        _wait(f"http://127.0.0.1:{port}/livez")
        code, body = http_get(f"http://127.0.0.1:{port}/readyz")
        assert code == 503 and "waiting for the first frame" in body
        assert http_get(f"http://127.0.0.1:{port}/livez")[0] == 200
        notify.collect(time.monotonic() + 2.0)
        assert not any("READY=1" in m for m in notify.messages)
    finally:
        _stop(proc)


def test_uplink_metrics_and_health(tmp_path: Path, broker: Broker, notify: NotifySocket) -> None:
    port = free_port()
    cfg = new_gateway(tmp_path, f"""
[metrics]
uplink_port = {port}

[mqtt]
host = "{broker.host}"
port = {broker.port}
""")
    (tmp_path / "data" / "check-last.json").write_text(
        '{"checks": [{"id": "camera.reach:gate1", "status": "fail"}, {"id": "keys", "status": "ok"}]}')
    proc = _start(["uplink", "--config", str(cfg)], {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"})
    try:
        notify.wait_for("READY=1")
        base = f"http://127.0.0.1:{port}"
        _wait(base + "/livez")
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            text = http_get(base + "/metrics")[1]
            if "edgegw_mqtt_connected 1.0" in text and "edgegw_outbox_depth" in text:
                break
            time.sleep(0.3)
        assert "edgegw_mqtt_connected 1.0" in text, text
        assert "edgegw_outbox_depth 0.0" in text and 'edgegw_build_info{daemon="uplink"' in text
        assert 'edgegw_check_status{check="camera.reach:gate1"} 2.0' in text
        code, body = http_get(base + "/readyz")
        assert code == 200 and "broker connected" in body
        assert http_get(base + "/nope")[0] == 404
        notify.wait_for("STATUS=connected")
        assert notify.wait_for("WATCHDOG=1")
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
