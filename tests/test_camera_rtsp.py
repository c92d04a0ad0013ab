"""RTSP cameras: credentials come from a file, reach the camera, and never appear in status or logs."""

from __future__ import annotations

import base64
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.camera.capture import RtspCamera, read_credentials
from drivers.camera.config import RtspCameraConfig
from drivers.camera.redact import redact_text, redact_url
from drivers.camera.supervisor import CameraState, CameraSupervisor
from edge.configbase import BackoffConfig
from edge.errors import DriverError

USER = "gatekeeper"
PASSWORD = "S3cr%t:p@ss/word"


class Rtsp401Server:
    """A loopback RTSP server that answers every request 401, recording the requests it saw."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self.requests: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                while True:
                    try:
                        data = conn.recv(4096)
                    except OSError:
                        break
                    if not data:
                        break
                    text = data.decode("latin-1")
                    self.requests.append(text)
                    cseq = next(
                        (
                            line.split(":", 1)[1].strip()
                            for line in text.split("\r\n")
                            if line.lower().startswith("cseq")
                        ),
                        "1",
                    )
                    reply = f'RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm="cam"\r\n\r\n'
                    try:
                        conn.sendall(reply.encode())
                    except OSError:
                        break

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def server() -> Iterator[Rtsp401Server]:
    srv = Rtsp401Server()
    yield srv
    srv.close()


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    path = tmp_path / "camera.cred"
    path.write_text(f"{USER}:{PASSWORD}\n")
    path.chmod(0o600)
    return path


def _leaks(text: str) -> bool:
    return USER in text or "S3cr" in text or "p@ss" in text


def test_credentials_reach_the_camera_but_not_status_errors_or_logs(
    server: Rtsp401Server, credentials: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    config = RtspCameraConfig(
        id="gate",
        url=f"rtsp://127.0.0.1:{server.port}/stream1",
        credentials_file=credentials,
        backoff=BackoffConfig(initial_s=0.01, max_s=0.05),
        open_timeout_s=2.0,
        read_timeout_s=2.0,
    )
    supervisor = CameraSupervisor()
    supervisor.add_camera(config)
    with caplog.at_level(logging.DEBUG):
        supervisor.start()
        deadline = time.monotonic() + 10.0
        while supervisor.status("gate").reconnects < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        status = supervisor.status("gate")
        assert supervisor.stop(timeout=5.0)
    out, err = capfd.readouterr()  # OpenCV and FFmpeg write to the process's stdout/stderr directly
    # The camera really was asked with our credentials (HTTP Basic, decoded from the header).
    auth = [
        line.split("Basic ", 1)[1]
        for r in server.requests
        for line in r.split("\r\n")
        if "Authorization: Basic" in line
    ]
    assert auth and base64.b64decode(auth[0]).decode() == f"{USER}:{PASSWORD}"
    assert status.state is CameraState.RECONNECTING
    assert status.reconnects >= 2
    assert status.last_error is not None and f"127.0.0.1:{server.port}" in status.last_error
    for text in (repr(status), status.last_error, status.target, out, err, caplog.text):
        assert not _leaks(text), text
    assert any("gate" in r.getMessage() for r in caplog.records)


def test_open_error_message_is_redacted(server: Rtsp401Server, credentials: Path) -> None:
    cam = RtspCamera(
        RtspCameraConfig(id="gate", url=f"rtsp://127.0.0.1:{server.port}/s?token=abc123", credentials_file=credentials)
    )
    with pytest.raises(DriverError) as info:
        cam.open()
    message = str(info.value)
    assert not _leaks(message) and "abc123" not in message
    assert "token=***" in message
    assert not _leaks(repr(cam.status))


def test_urls_with_inline_credentials_are_rejected() -> None:
    with pytest.raises(ValidationError, match="credentials_file"):
        RtspCameraConfig(id="gate", url="rtsp://admin:hunter2@10.0.0.5/stream")
    with pytest.raises(ValidationError, match="rtsp://"):
        RtspCameraConfig(id="gate", url="/dev/video0")


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/s1") == "rtsp://***@10.0.0.5:554/s1"
    assert redact_url("http://10.0.0.5/cgi?user=admin&pwd=hunter2&ch=1") == "http://10.0.0.5/cgi?user=***&pwd=***&ch=1"
    assert redact_url("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"


def test_redact_text_masks_urls_and_known_secrets() -> None:
    text = "failed rtsp://admin:hunter2@cam.local/s1 and http://x/?password=pw1 (hunter2 rejected)"
    out = redact_text(text, secrets=["hunter2"])
    assert "hunter2" not in out and "pw1" not in out and "admin" not in out
    assert "rtsp://***@cam.local/s1" in out and "password=***" in out


def test_credentials_file_errors_do_not_echo_content(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cred"
    bad.write_text("hunter2-without-a-user-separator\n")
    bad.chmod(0o600)
    with pytest.raises(DriverError) as info:
        read_credentials(bad)
    assert "hunter2" not in str(info.value)
    with pytest.raises(DriverError, match="FileNotFoundError"):
        read_credentials(tmp_path / "missing.cred")
    good = tmp_path / "good.cred"
    good.write_text("user:pa:ss\n")
    good.chmod(0o600)
    assert read_credentials(good) == ("user", "pa:ss")


_PROBE = """
import logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.DEBUG)
from drivers.camera.config import RtspCameraConfig
from drivers.camera.supervisor import CameraSupervisor
from edge.configbase import BackoffConfig
sup = CameraSupervisor()
sup.add_camera(RtspCameraConfig(id="gate", url=sys.argv[1], credentials_file=Path(sys.argv[2]),
                                backoff=BackoffConfig(initial_s=0.01, max_s=0.02)))
sup.start()
deadline = time.monotonic() + 10
while sup.status("gate").reconnects < 2 and time.monotonic() < deadline:
    time.sleep(0.02)
print(sup.status("gate"))
sup.stop()
"""


def test_verbose_ffmpeg_and_opencv_logs_do_not_leak_credentials(server: Rtsp401Server, credentials: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OPENCV_FFMPEG_DEBUG": "1", "OPENCV_LOG_LEVEL": "DEBUG", "PYTHONPATH": str(repo)}
    url = f"rtsp://127.0.0.1:{server.port}/stream1"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, url, str(credentials)], capture_output=True, text=True, env=env, timeout=60
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "401" in output  # FFmpeg's own verbose log was captured ...
    assert "reconnecting" in output  # ... and so were our status and log lines
    assert not _leaks(output), output
