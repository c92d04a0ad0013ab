"""`edgegw check`, deeper: stable ids, JSON, selection, exit codes, and the new checks against real things
(an RTSP-speaking socket, real photos through the real face model, an SNTP server, a TLS server)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from drivers.camera.probe import probe_stream
from edge.app.commission_system import NTP_EPOCH, check_storage, check_time, check_tls, check_units, classify_free
from edge.cli import main
from tests.conftest import MODELS_DIR, SHARED_DATA, free_port, new_gateway

OBAMA = SHARED_DATA / "faces" / "face_recognition" / "obama" / "obama.jpg"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["check", *argv])
    return rc, capsys.readouterr().out


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    rc, out = _run(capsys, *argv, "--json")
    return rc, json.loads(out)


def _gw(tmp_path: Path, cameras: str = "") -> Path:
    return new_gateway(tmp_path, f'[models]\ndir = "{MODELS_DIR}"\n\n{cameras}')


FAKE = """
[[cameras]]
id = "{id}"
kind = "fake"
width = 320
height = 240
fps = 10
pace = "realtime"
objects = {objects}
"""


# -- ids, selection, JSON, exit codes ---------------------------------------------------------------
def test_ids_are_stable_listed_and_selectable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _gw(tmp_path, FAKE.format(id="gate1", objects=1))
    rc, out = _run(capsys, "--list-checks")
    assert rc == 0 and "camera.density" in out and "storage" in out
    rc, out = _run(capsys, "--config", str(cfg), "--list-checks", "--skip", "camera.*")
    ids = [line.split()[0] for line in out.splitlines()]
    assert ids[:6] == ["keys", "models", "camera.reach:gate1", "camera.frame:gate1", "camera.fps:gate1",
                       "camera.density:gate1"]
    assert "camera.fps:gate1  (not selected)" in out and "broker" in ids

    rc, body = _json(capsys, "--config", str(cfg), "--only", "keys,storage", "--no-broker")
    checks = body["checks"]
    assert isinstance(checks, list) and [c["id"] for c in checks] == ["keys", "storage"]
    for c in checks:
        assert set(c) == {"id", "status", "detail", "hint", "docs", "duration_ms"}
        assert c["docs"].startswith("docs/commissioning.md#")
    assert body["summary"] == {**body["summary"], "ok": 2, "fail": 0, "status": "ok", "exit": 0} and rc == 0
    # The last result is left for the metrics and the console.
    assert json.loads((tmp_path / "data" / "check-last.json").read_text())["checks"][0]["id"] == "keys"


def test_exit_codes_strict_and_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _gw(tmp_path, "[commission]\nunits = []\n")
    (tmp_path / "data" / "data.key").chmod(0o644)
    rc, body = _json(capsys, "--config", str(cfg), "--only", "keys")
    assert rc == 1 and body["summary"]["fail"] == 1  # type: ignore[index]
    keys = body["checks"][0]  # type: ignore[index]
    assert keys["status"] == "fail" and "chmod 600" in keys["detail"]

    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\ndistrict = "d"\ncommunity = "c"\n')
    capsys.readouterr()
    assert main(["check", "--config", str(bad)]) == 2


def test_measured_fps_matches_the_configured_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _gw(tmp_path, FAKE.format(id="gate1", objects=1))
    rc, body = _json(capsys, "--config", str(cfg), "--only", "camera.fps", "--sample", "1.5")
    fps = body["checks"][0]  # type: ignore[index]
    assert fps["status"] == "ok" and "10 configured" in fps["detail"] and rc == 0


def test_strict_turns_a_warning_into_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A broker certificate that expires in 10 days is a warning: exit 0, or 1 with --strict.
    server = TlsServer(tmp_path / "tls", 10)
    try:
        cfg = _gw(tmp_path, f'[mqtt]\nhost = "localhost"\nport = {server.port}\n\n[mqtt.tls]\n'
                            f'ca_file = "{server.ca_file}"\n')
        rc, body = _json(capsys, "--config", str(cfg), "--only", "tls")
        assert body["checks"][0]["status"] == "warn" and rc == 0  # type: ignore[index]
        rc, body = _json(capsys, "--config", str(cfg), "--only", "tls", "--strict")
        assert rc == 1 and body["summary"]["exit"] == 1  # type: ignore[index]
        rc, out = _run(capsys, "--config", str(cfg), "--only", "tls")
        assert "warn tls" in out and "fix: renew the broker certificate" in out
    finally:
        server.sock.close()


def test_no_colour_without_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _gw(tmp_path)
    rc, out = _run(capsys, "--config", str(cfg), "--only", "keys")
    assert rc == 0 and "\033[" not in out and out.startswith("ok   config")


# -- cameras ---------------------------------------------------------------------------------------
def test_black_and_frozen_pictures_fail_with_distinct_fixes(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((240, 320, 3), np.uint8))
    cfg = _gw(tmp_path, FAKE.format(id="still", objects=0) + f"""
[[cameras]]
id = "dark"
kind = "file"
path = "{black}"
pace = "realtime"
fps = 10
loop = true
""")
    rc, body = _json(capsys, "--config", str(cfg), "--only", "camera.frame", "--sample", "1")
    by_id = {c["id"]: c for c in body["checks"]}  # type: ignore[union-attr]
    assert by_id["camera.frame:dark"]["status"] == "fail" and "black" in by_id["camera.frame:dark"]["detail"]
    assert "lens cap" in by_id["camera.frame:dark"]["hint"]
    assert by_id["camera.frame:still"]["status"] == "fail" and "frozen" in by_id["camera.frame:still"]["detail"]
    assert "power-cycle" in by_id["camera.frame:still"]["hint"]
    assert rc == 1


class RtspStub:
    """A loopback socket that answers RTSP DESCRIBE with a fixed status (or never answers)."""

    def __init__(self, code: int | None) -> None:
        self.code = code
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.code is None:
                self._held.append(conn)  # accept, then say nothing
                continue
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        # RTSP keeps the connection for the next request (the authenticated DESCRIBE).
        with conn:
            while data := conn.recv(4096).decode("latin-1"):
                self.requests.append(data)
                cseq = next((ln.split(":")[1].strip() for ln in data.split("\r\n") if ln.startswith("CSeq")), "1")
                extra = 'WWW-Authenticate: Digest realm="cam", nonce="abc123"\r\n' if self.code == 401 else ""
                conn.sendall(f"RTSP/1.0 {self.code} X\r\nCSeq: {cseq}\r\n{extra}\r\n".encode())

    def close(self) -> None:
        self.sock.close()
        for c in self._held:
            c.close()


@pytest.fixture
def stubs() -> Iterator[list[RtspStub]]:
    made: list[RtspStub] = []
    yield made
    for s in made:
        s.close()


def test_camera_reach_names_refused_401_404_and_timeout(tmp_path: Path, stubs: list[RtspStub]) -> None:
    refused = probe_stream(f"rtsp://127.0.0.1:{free_port()}/stream1", None, timeout_s=2)
    assert refused.fault == "refused" and "RTSP is enabled" in refused.hint
    for code, fault, words in ((401, "unauthorised", "credentials"), (404, "not_found", "URL path"),
                               (None, "timeout", "PoE"), (200, "ok", "")):
        stub = RtspStub(code)
        stubs.append(stub)
        res = probe_stream(f"rtsp://127.0.0.1:{stub.port}/stream1", ("admin", "hunter2-secret"), timeout_s=1)
        assert res.fault == fault, (code, res)
        assert words in res.hint
        assert "hunter2-secret" not in res.detail + res.hint
    # With credentials, the 401 is answered with a Digest response that never carries the password.
    challenged = stubs[0].requests
    assert len(challenged) == 2 and 'Digest username="admin"' in challenged[1]
    assert "hunter2-secret" not in "".join(challenged)


def test_camera_reach_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      stubs: list[RtspStub]) -> None:
    stub = RtspStub(404)
    stubs.append(stub)
    creds = tmp_path / "cam.cred"
    creds.write_text("admin:p4ss-w0rd-xyz\n")
    creds.chmod(0o600)
    cfg = _gw(tmp_path, f"""
[[cameras]]
id = "lpr"
kind = "rtsp"
url = "rtsp://127.0.0.1:{stub.port}/wrong"
credentials_file = "{creds}"
""")
    rc, out = _run(capsys, "--config", str(cfg), "--only", "camera.*")
    assert rc == 1
    assert "fail camera.reach:lpr" in out and "404" in out and "check the URL path" in out
    assert "skip camera.frame:lpr" in out and "p4ss-w0rd-xyz" not in out


@pytest.mark.models
def test_pixel_density_from_a_real_photo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A real face photo played as a camera; the face model measures its width from live frames.
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    img = cv2.imread(str(OBAMA))
    cv2.imwrite(str(big), img)
    h, w = img.shape[:2]
    canvas = np.full((h, w, 3), 90, np.uint8)
    tiny = cv2.resize(img, (w // 6, h // 6))
    canvas[:tiny.shape[0], :tiny.shape[1]] = tiny
    cv2.imwrite(str(small), canvas)
    cams = "".join(f"""
[[cameras]]
id = "{name}"
kind = "file"
path = "{path}"
pace = "realtime"
fps = 5
loop = true
""" for name, path in (("near", big), ("far", small)))
    cfg = _gw(tmp_path, cams)
    rc, body = _json(capsys, "--config", str(cfg), "--only", "camera.density", "--sample", "1")
    by_id = {c["id"]: c for c in body["checks"]}  # type: ignore[union-attr]
    near, far = by_id["camera.density:near"], by_id["camera.density:far"]
    assert near["status"] == "ok" and "face width" in near["detail"], near
    assert far["status"] in ("fail", "warn", "skip"), far
    if far["status"] != "skip":
        width = float(far["detail"].split("face width ")[1].split(" px")[0])
        assert width < 80 and "zoom in" in far["hint"]
    assert rc == (1 if far["status"] == "fail" else 0)


# -- time ------------------------------------------------------------------------------------------
class SntpServer:
    """A loopback SNTP server whose clock runs `offset_s` ahead of ours."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(512)
            except OSError:
                return
            now = time.time() + self.offset_s + NTP_EPOCH
            sec, frac = int(now), int((now % 1) * 2**32)
            reply = bytearray(48)
            reply[0] = (0 << 6) | (4 << 3) | 4
            reply[1] = 2
            reply[24:32] = data[40:48]
            struct.pack_into("!IIII", reply, 32, sec, frac, sec, frac)
            self.sock.sendto(bytes(reply), addr)


def test_time_sync_offset_over_one_second_fails() -> None:
    good, bad = SntpServer(0.0), SntpServer(5.0)
    try:
        status, detail, _ = check_time([f"127.0.0.1:{good.port}"])
        assert status == "ok" and "offset" in detail
        status, detail, hint = check_time([f"127.0.0.1:{bad.port}"])
        assert status == "fail" and "+5.0 s" in detail and "chrony" in hint
        status, detail, _ = check_time([f"127.0.0.1:{free_port()}"])
        assert status == "fail" and "no NTP server answered" in detail
    finally:
        good.sock.close()
        bad.sock.close()


# -- TLS -------------------------------------------------------------------------------------------
def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          days: int, ca: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    iss_name, iss_key = issuer or (name, key)
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(iss_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
         .not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return b.sign(iss_key, hashes.SHA256())


class TlsServer:
    """A loopback TLS listener presenting a server certificate that expires in `days`."""

    def __init__(self, tmp: Path, days: int) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("test CA", ca_key, None, 3650, ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert("localhost", key, (ca.subject, ca_key), days)
        tmp.mkdir(parents=True, exist_ok=True)
        self.ca_file = tmp / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (tmp / "srv.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / "srv.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(tmp / "srv.pem", tmp / "srv.key")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass


def test_tls_chain_and_days_to_expiry(tmp_path: Path) -> None:
    fresh, expiring = TlsServer(tmp_path / "a", 400), TlsServer(tmp_path / "b", 10)
    try:
        status, detail, _ = check_tls("localhost", fresh.port, ca_file=fresh.ca_file, cert_file=None, key_file=None)
        assert status == "ok" and "chain verifies" in detail
        status, detail, hint = check_tls("localhost", expiring.port, ca_file=expiring.ca_file, cert_file=None,
                                         key_file=None)
        assert status == "warn" and ("expires in 9 days" in detail or "expires in 10 days" in detail)
        assert "renew" in hint
        # The wrong CA: the chain does not verify.
        status, detail, hint = check_tls("localhost", fresh.port, ca_file=expiring.ca_file, cert_file=None,
                                         key_file=None)
        assert status == "fail" and "does not verify" in detail and "tls.ca_file" in hint
    finally:
        fresh.sock.close()
        expiring.sock.close()


# -- storage and units ------------------------------------------------------------------------------
def test_storage_thresholds(tmp_path: Path) -> None:
    assert [classify_free(f, 100) for f in (50, 19, 4)] == ["ok", "warn", "fail"]
    status, detail, _ = check_storage(tmp_path, 1)
    assert status in ("ok", "warn", "fail") and "GiB free" in detail
    status, detail, hint = check_storage(tmp_path, 2**62)
    assert status == "fail" and "outbox quota" in detail and "max_mb" in hint


def test_units_need_systemd_and_a_watchdog(tmp_path: Path) -> None:
    assert check_units(["edgegw-capture.service"], systemd_dir=tmp_path / "absent")[0] == "skip"
    answers = {"edgegw-capture.service": "LoadState=loaded\nActiveState=active\nSubState=running\nWatchdogUSec=1min",
               "edgegw-uplink.service": "LoadState=loaded\nActiveState=active\nSubState=running\nWatchdogUSec=0"}

    def systemctl(cmd: list[str]) -> str:
        return answers[cmd[2]]

    status, detail, hint = check_units(list(answers), run=systemctl, systemd_dir=tmp_path)
    assert status == "fail" and "edgegw-uplink.service runs without a watchdog" in detail and "enable --now" in hint
    answers["edgegw-uplink.service"] = answers["edgegw-capture.service"]
    assert check_units(list(answers), run=systemctl, systemd_dir=tmp_path)[0] == "ok"
