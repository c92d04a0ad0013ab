"""The console's auth and editor, in-process against a real config file, a real audit log and real SQLite:
first-boot password, must-change, sessions, CSRF, the login throttle, roles, and gate-line saving through
the root config validator (invalid → 400 with its message; valid → written atomically, previous kept, audited)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edge.app.config import load_config
from edge.app.console import GatewayBackend, with_gate_line
from edge.audit import AuditLog
from edge.console.users import LOGIN_LIMITS, Role, UserStore
from edge.console.web import COOKIE, create_app
from tests.conftest import new_gateway

CAMERAS = """
[[cameras]]
id = "gate1"
kind = "fake"
width = 640
height = 480

# the plate camera keeps its comment through an edit
[[cameras]]
id = "lpr"
kind = "fake"

[plates]
cameras = ["lpr"]
"""


class Clock:
    """A settable clock for the throttle's windows (so the unit test need not sleep for an hour)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[tuple[Path, GatewayBackend, UserStore, Clock]]:
    cfg = new_gateway(tmp_path, CAMERAS)
    backend = GatewayBackend(cfg)
    clock = Clock()
    users = UserStore(tmp_path / "data" / "console.db", clock=clock)
    yield cfg, backend, users, clock
    users.close()
    backend.close()


def _client(gw: tuple[Path, GatewayBackend, UserStore, Clock]) -> TestClient:
    _, backend, users, _ = gw
    return TestClient(create_app(backend, users, secure_cookies=False), follow_redirects=False)


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _login(client: TestClient, user: str, password: str) -> int:
    page = client.get("/login")
    r = client.post("/login", data={"username": user, "password": password, "csrf": _csrf(page.text)})
    return r.status_code


def test_first_boot_admin_must_change_password(gw: tuple[Path, GatewayBackend, UserStore, Clock]) -> None:
    _, _, users, clock = gw
    first = users.first_boot()
    assert first and users.first_boot() is None  # once only
    client = _client(gw)
    assert client.get("/").headers["location"] == "/login"
    assert _login(client, "admin", first) == 303
    cookie = client.cookies.get(COOKIE)
    assert cookie
    set_cookie = [v for k, v in client.get("/login").headers.items() if k == "set-cookie"]
    assert set_cookie  # the login page's own CSRF cookie
    # Every page sends a must-change session to the password form first.
    assert client.get("/").headers["location"] == "/password"
    page = client.get("/password")
    token = _csrf(page.text)
    bad = client.post("/password", data={"csrf": token, "current": first, "new": "short", "again": "short"})
    assert bad.status_code == 400 and "at least 10 characters" in bad.text
    ok = client.post("/password", data={"csrf": token, "current": first, "new": "a-long-new-password",
                                        "again": "a-long-new-password"})
    assert ok.status_code == 303
    home = client.get("/")
    assert home.status_code == 200 and "Camera gate1" in home.text and "Uplink" in home.text
    clock.now += 2
    assert not users.verify("admin", first) and users.verify("admin", "a-long-new-password")


def test_session_cookie_flags_and_csrf(gw: tuple[Path, GatewayBackend, UserStore, Clock]) -> None:
    _, _, users, _ = gw
    users.add("ina", Role.INSTALLER, "installer-password", must_change=False)
    client = _client(gw)
    page = client.get("/login")
    r = client.post("/login", data={"username": "ina", "password": "installer-password", "csrf": _csrf(page.text)})
    header = r.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=strict" in header.replace("Strict", "strict")
    # A POST without the session's CSRF token is refused, whatever the cookie says.
    r = client.post("/camera/gate1/gate-line", data={"ax": "0", "ay": "10", "bx": "600", "by": "10"})
    assert r.status_code == 403
    r = client.post("/camera/gate1/gate-line", data={"ax": "0", "ay": "10", "bx": "600", "by": "10",
                                                     "csrf": "forged"})
    assert r.status_code == 403
    # Login itself needs the login page's token.
    r = TestClient(client.app).post("/login", data={"username": "ina", "password": "installer-password"})
    assert r.status_code in (403, 422)


def test_login_throttle_one_per_second_five_per_minute_twenty_per_hour(
        gw: tuple[Path, GatewayBackend, UserStore, Clock]) -> None:
    _, backend, users, clock = gw
    users.add("ina", Role.INSTALLER, "installer-password", must_change=False)
    assert LOGIN_LIMITS == ((1, 1.0), (5, 60.0), (20, 3600.0))
    client = _client(gw)
    assert _login(client, "ina", "wrong-password") == 401
    assert _login(client, "ina", "installer-password") == 429  # a second try within the same second
    for _ in range(4):
        clock.now += 1.1
        assert _login(client, "ina", "wrong-password") == 401
    clock.now += 1.1
    r_code = _login(client, "ina", "installer-password")  # sixth within a minute: refused even if right
    assert r_code == 429
    clock.now += 61
    assert _login(client, "ina", "installer-password") == 303
    # Twenty an hour: spread them over minutes and the 21st is refused.
    for _ in range(14):
        clock.now += 13
        _login(client, "ina", "wrong-password")
    clock.now += 13
    assert _login(client, "ina", "wrong-password") == 429
    records = AuditLog(backend.cfg.path(backend.cfg.audit.path)).records()
    actions = [r.action for r in records]
    assert "console_login" in actions and "console_login_failed" in actions and "console_login_throttled" in actions


def test_viewer_cannot_open_the_editor_or_the_preview(gw: tuple[Path, GatewayBackend, UserStore, Clock]) -> None:
    _, _, users, _ = gw
    users.add("vic", Role.VIEWER, "viewer-password", must_change=False)
    client = _client(gw)
    assert _login(client, "vic", "viewer-password") == 303
    assert client.get("/").status_code == 200 and client.get("/checks").status_code == 200
    for path in ("/camera/gate1", "/camera/gate1/editor", "/camera/gate1/stream.mjpg", "/camera/gate1/snapshot.jpg",
                 "/serial"):
        r = client.get(path)
        assert r.status_code == 403 and "may not open this page" in r.text, path
    assert "gate line</a>" not in client.get("/").text


def test_gate_line_goes_through_the_validator(gw: tuple[Path, GatewayBackend, UserStore, Clock]) -> None:
    cfg_path, backend, users, _ = gw
    users.add("ina", Role.INSTALLER, "installer-password", must_change=False)
    client = _client(gw)
    assert _login(client, "ina", "installer-password") == 303
    token = _csrf(client.get("/camera/gate1/editor").text)
    before = cfg_path.read_text()
    r = client.post("/camera/gate1/gate-line", data={"csrf": token, "ax": "100", "ay": "200", "bx": "100", "by": "200"})
    assert r.status_code == 400 and "gate line end points must differ" in r.text
    assert "gate_lines.gate1" in r.text  # the validator's own message names the key
    r = client.post("/camera/gate1/gate-line", data={"csrf": token, "ax": "-5", "ay": "0", "bx": "9", "by": "x"})
    assert r.status_code == 400 and "must be a number" in r.text
    assert cfg_path.read_text() == before  # nothing written
    r = client.post("/camera/gate1/gate-line", data={"csrf": token, "ax": "0", "ay": "240", "bx": "640", "by": "260"})
    assert r.status_code == 200 and "Saved" in r.text
    after = load_config(cfg_path)
    assert after.gate_lines["gate1"].a == (0.0, 240.0) and after.gate_lines["gate1"].b == (640.0, 260.0)
    assert (cfg_path.parent / "gw.toml.prev").read_text() == before
    assert "# the plate camera keeps its comment through an edit" in cfg_path.read_text()
    rec = AuditLog(backend.cfg.path(backend.cfg.audit.path)).last("config_change")
    assert rec is not None and rec.actor == "ina" and '"camera":"gate1"' in rec.details.replace(" ", "")


def test_with_gate_line_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    text = '# top comment\n[gateway]\ndistrict = "d"  # trailing\n\n[gate_lines.lpr]\na = [0, 1]\nb = [50, 1]\n'
    out = with_gate_line(text, "gate1", (1.5, 2.0), (300.0, 2.0))
    assert out.startswith("# top comment") and "# trailing" in out and "[gate_lines.lpr]" in out
    assert "[gate_lines.gate1]" in out and "a = [1.5, 2]" in out


def test_the_console_process_loads_no_vision_stack() -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys, edge.app.console, edge.console.web, edge.cli.console; "
            "print(sorted(m for m in ('cv2', 'onnxruntime', 'serial') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_zones_and_masks_go_through_the_validator(gw: tuple[Path, GatewayBackend, UserStore, Clock]) -> None:
    cfg_path, backend, users, _ = gw
    users.add("ina", Role.INSTALLER, "installer-password", must_change=False)
    users.add("vic", Role.VIEWER, "viewer-password", must_change=False)
    client = _client(gw)
    assert _login(client, "ina", "installer-password") == 303
    page = client.get("/camera/gate1/zones")
    assert page.status_code == 200 and 'id="shapes"' in page.text
    token = _csrf(page.text)
    row = {"csrf": token, "kind": ["zone", "mask"], "id": ["stall", "win"], "rule": ["dwell", ""], "note": ["", "x"],
           "min_covered": ["", ""], "raise_after_s": ["", ""], "clear_after_s": ["", ""], "dwell_s": ["30", ""]}
    good = {**row, "points": ["0,240 639,240 639,479 0,479", "0,0 100,0 100,100"]}
    before = cfg_path.read_text()
    r = client.post("/camera/gate1/zones", data=good)
    assert r.status_code == 409 and "no frame from capture yet" in r.text  # no size known: nothing guessed
    backend.live.publish("gate1", b"\xff\xd8 not shown", width=640, height=480)
    for points, message in ((["0,0 639,479 639,0 0,479", ""], "crosses itself"),
                            (["0,0 639,0", ""], "at least 3 points"),
                            (["0,0 900,0 900,479", ""], "outside the frame")):
        r = client.post("/camera/gate1/zones", data={**row, "points": points, "id": ["stall", ""]})
        assert r.status_code == 400 and message in r.text and "zones.zone.0.polygon" in r.text, message
    assert cfg_path.read_text() == before  # nothing written
    r = client.post("/camera/gate1/zones", data=good)
    assert r.status_code == 200 and "Saved" in r.text, r.text
    after = load_config(cfg_path)
    assert [(z.id, z.rule, z.dwell_s, z.polygon[2]) for z in after.zones.zone] == [("stall", "dwell", 30.0, (1.0, 1.0))]
    assert [(m.id, m.note) for m in after.masks] == [("win", "x")]
    assert (cfg_path.parent / "gw.toml.prev").read_text() == before
    rec = AuditLog(backend.cfg.path(backend.cfg.audit.path)).last("config_change")
    assert rec is not None and rec.actor == "ina" and '"change":"zones_masks"' in rec.details.replace(" ", "")
    assert "stall:dwell" in rec.details and "0.5" not in rec.details  # names, not polygons
    # The editor shows what is saved, in camera pixels.
    assert 'value="0,240 639,240 639,479 0,479"' in client.get("/camera/gate1/zones").text
    viewer = _client(gw)
    assert _login(viewer, "vic", "viewer-password") == 303
    for path in ("/camera/gate1/zones", "/camera/gate1/zones/applied"):
        assert viewer.get(path).status_code == 403, path
    r = viewer.post("/camera/gate1/zones", data={**good, "csrf": "x"})
    assert r.status_code == 403


def test_with_a_drop_in_directory_edits_go_there_and_never_to_gateway_toml(
        gw: tuple[Path, GatewayBackend, UserStore, Clock]) -> None:
    cfg_path, backend, users, _ = gw
    # gateway.toml has a zone on gate1 drawn by hand; the console takes gate1 over without losing it.
    with cfg_path.open("a") as f:
        f.write('\n[[zones.zone]]\nid = "lane"\ncamera = "gate1"\nrule = "obstruction"\n'
                "polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0]]\n\n[gate_lines.lpr]\na = [0, 100]\nb = [600, 100]\n")
    (cfg_path.parent / "console.d").mkdir()
    main = cfg_path.read_text()
    users.add("ina", Role.INSTALLER, "installer-password", must_change=False)
    client = _client(gw)
    assert _login(client, "ina", "installer-password") == 303
    token = _csrf(client.get("/camera/gate1/editor").text)
    r = client.post("/camera/gate1/gate-line", data={"csrf": token, "ax": "0", "ay": "240", "bx": "640", "by": "260"})
    assert r.status_code == 200 and "Saved" in r.text, r.text
    assert cfg_path.read_text() == main  # gateway.toml untouched
    dropin = cfg_path.parent / "console.d" / "drawing.toml"
    text = dropin.read_text()
    assert 'cameras = ["gate1"]' in text and "[gate_lines.gate1]" in text and 'id = "lane"' in text
    merged = load_config(cfg_path)
    assert merged.gate_lines["gate1"].a == (0.0, 240.0) and merged.gate_lines["lpr"].a == (0.0, 100.0)
    assert [z.id for z in merged.zones.zone] == ["lane"]  # carried over, not doubled
    # Deleting the zone in the console deletes it, although gateway.toml still has it.
    backend.live.publish("gate1", b"\xff\xd8", width=640, height=480)
    empty = {"csrf": token, **{k: [] for k in ("kind", "id", "points", "rule", "note", "min_covered",
                                                "raise_after_s", "clear_after_s", "dwell_s")}}
    assert client.post("/camera/gate1/zones", data=empty).status_code == 200
    assert load_config(cfg_path).zones.zone == () and (cfg_path.parent / "console.d" / "drawing.toml.prev").exists()
    # An invalid edit is refused with the validator's words and writes nothing.
    before = dropin.read_text()
    r = client.post("/camera/gate1/gate-line", data={"csrf": token, "ax": "5", "ay": "5", "bx": "5", "by": "5"})
    assert r.status_code == 400 and "gate line end points must differ" in r.text and dropin.read_text() == before
    rec = AuditLog(backend.cfg.path(backend.cfg.audit.path)).last("config_change")
    assert rec is not None and '"file":"drawing.toml"' in rec.details.replace(" ", "")


def test_the_drop_in_may_hold_drawings_only_and_its_errors_name_its_lines(tmp_path: Path) -> None:
    from edge.app.config import parse_config
    from edge.errors import ConfigError

    main = CAMERAS
    head = f'[gateway]\ndistrict = "d"\ncommunity = "c"\ngateway = "g"\ndata_dir = "{tmp_path}"\n'
    with pytest.raises(ConfigError, match=r"drawing\.toml:2: key 'mqtt': Extra inputs are not permitted"):
        parse_config(head + main, "gw.toml", tmp_path, drawing=('cameras = ["gate1"]\n[mqtt]\nhost = "evil"\n',
                                                                 "console.d/drawing.toml"))
    with pytest.raises(ConfigError, match="drawings of cameras not listed in `cameras`: lpr"):
        parse_config(head + main, "gw.toml", tmp_path, drawing=('cameras = ["gate1"]\n[gate_lines.lpr]\n'
                                                                 "a = [0, 1]\nb = [90, 1]\n", "drawing.toml"))
    with pytest.raises(ConfigError, match=r"drawing\.toml:3: key 'gate_lines\.gate1'"):
        parse_config(head + main, "gw.toml", tmp_path, drawing=('cameras = ["gate1"]\n\n[gate_lines.gate1]\n'
                                                                 "a = [5, 5]\nb = [5, 5]\n", "drawing.toml"))
